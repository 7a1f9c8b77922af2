"""Kernels compiled with numba where it is installed (`pip install 'onnxpath[jit]'`), for the
hot loops numpy cannot run in one pass; numpy's code stays the reference and the fallback.
`kernel_set.KernelSet` builds a set of them lazily; the kernels live beside their callers
(`evaluate/jit_kernels.py`, `pathways/selection_kernels.py`)."""
