"""Model intake: the only place that knows how exporters write models. It turns a user's model
into the one canonical form the rest of onnxpath differentiates (a float tensor to attribute,
one logits tensor, exact shapes):
- `model`: loading, validation and `normalise` (IR, opset, pads, dynamic dims), which calls
  the others;
- `fold`: shape arithmetic folded to constants;
- `heads`: which output is explained, and the N×K logits tensor that stands for it;
- `cut`: the float tensor attributions are taken with respect to (`wrt`), made a graph input,
  with the small prefix model that computes it from the user's inputs;
- `wrt`: how an integer input finds its attributed tensor (a text model's embedding);
- `probe`: exact shapes and shape-only values from one ONNX Runtime run, where static shape
  inference leaves dims unknown.
Imports `autodiff` (graph helpers) and `ort` (sessions for the probe, external data).
"""
