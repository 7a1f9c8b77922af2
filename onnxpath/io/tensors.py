"""Tensors from files: `.npy` for one input, `.npz` for a model with several. Headers are
checked before data is read, and pickles are never loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxpath.errors import InputError
from onnxpath.io.storage import RemotePath


def load_npy(path: Path, input_shape: tuple) -> np.ndarray:
    """A tensor in the model's input layout (C×H×W or 1×C×H×W for an image model). The header
    is checked before any data is read, so a wrong or absurd shape costs nothing; pickled
    objects are never loaded."""
    try:
        with path.open("rb") if isinstance(path, RemotePath) else open(path, "rb") as f:
            shape, dtype = npy_header(f, path)
            check_tensor(path, shape, dtype, input_shape)
            f.seek(0)
            array = np.lib.format.read_array(f, allow_pickle=False)
    except FileNotFoundError as err:
        raise InputError(f"input not found: {path}") from err
    except IsADirectoryError as err:
        raise InputError(f"{path} is a directory, not a .npy file") from err
    except InputError:
        raise
    except Exception as err:  # truncated data, damaged header
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read {path} as a .npy tensor ({first})") from err
    array = array.reshape(array.shape[1:]) if array.ndim == len(input_shape) else array
    if not np.isfinite(array).all():
        raise InputError(f"{path}: tensor holds NaN or Inf values")
    # Integers (token ids, uint8 pixels) and float64 stay exact (a float64 model runs in
    # float64); the model input's dtype is applied later.
    return np.ascontiguousarray(array, dtype=np.int64 if array.dtype.kind in "biu"
                                else np.float64 if array.dtype == np.float64 else np.float32)


def npy_header(f, path: Path) -> tuple[tuple, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as err:
        raise InputError(f"{path} is not a .npy file (no NumPy header; an .npz archive or "
                         "another format?)") from err
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise InputError(f"{path}: unsupported .npy format version {version}")
    return shape, dtype


def check_tensor(path: Path, shape: tuple, dtype: np.dtype, input_shape: tuple) -> None:
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects (pickled data); onnxpath never loads "
                         "pickles: save a numeric array")
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{path}: dtype {dtype} is not a real number type")
    want = tuple(input_shape[1:])
    got = tuple(shape[1:]) if len(shape) == len(want) + 1 and shape[0] == 1 else tuple(shape)
    if len(got) != len(want) or any(isinstance(w, int) and w != g
                                    for w, g in zip(want, got, strict=True)):
        shown = tuple(w if isinstance(w, int) else "?" for w in want)
        raise InputError(f"{path}: tensor shape {tuple(shape)} does not match the model input "
                         f"{shown} (or 1×{shown})")


def load_npz(path: str | Path, inputs: list) -> dict[str, np.ndarray]:
    """One example of a model with several inputs: an `.npz` with one array per input name
    (with or without a leading batch of 1). Inputs it lacks get their documented defaults
    later; a name the model does not have is an error. Pickles are never loaded."""
    path = Path(path)
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in inputs}
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError as err:
        raise InputError(f"input not found: {path}") from err
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read {path} as an .npz of named arrays ({first})") from err
    unknown = [name for name in arrays if name not in ranks]
    if unknown:
        raise InputError(f"{path}: no model input named {', '.join(map(repr, unknown))}; the "
                         f"model's inputs are {', '.join(ranks)}")
    result = {}
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise InputError(f"{path}: array '{name}' has dtype {array.dtype}, not numbers")
        if array.ndim == ranks[name] and array.shape[0] == 1:
            array = array[0]
        elif array.ndim != ranks[name] - 1:
            raise InputError(f"{path}: array '{name}' has shape {array.shape}; the model input "
                             f"has rank {ranks[name]} (one example, with or without the batch)")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"{path}: array '{name}' holds NaN or Inf values")
        result[name] = array
    return result
