"""The gradient engine: one model's forward and gradient sessions (`gradient`), the seeds its
graphs compute for themselves (`seeds`), the on-disk session cache (`cache`) and batch sizing
(`batching`). Imports `intake`, `autodiff` and `ort`; knows no method and no file format."""
