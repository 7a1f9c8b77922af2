"""Model intake helpers: everything onnxpath knows about how exporters write models.

`model.normalise` calls them; nothing downstream imports them. They turn a user's model into
the one canonical form the rest of onnxpath differentiates:
- `heads`: which output is explained, and the N×K logits tensor that stands for it;
- `cut`: the float tensor attributions are taken with respect to (`wrt`), made a graph input,
  with the small prefix model that computes it from the user's inputs;
- `probe`: exact shapes and shape-only values from one ONNX Runtime run, where static shape
  inference leaves dims unknown.
"""
