"""Tools over the public API, one per command that needs more than a run: exporting the gradient
graph (`export`), checking it against finite differences (`gradcheck`) and describing a model
(`inspect`). Imports `Explainer` and below."""
