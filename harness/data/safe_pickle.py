"""Reading CALVIN's pickled .npy files without letting them run code.

CALVIN stores `auto_lang_ann.npy`, `scene_info.npy` and `embeddings.npy` as `np.save` of a dict: a .npy
header declaring a 0-d object array, followed by a pickle of that array. `np.load(allow_pickle=True)`
would let such a file import and call anything (a downloaded dataset could run a shell command the
moment `python -m harness.data check` looks at it). `load_npy` parses the header with
`numpy.lib.format` and feeds the rest to `DatasetUnpickler`, which rebuilds only what these files hold:
dicts, lists, tuples, str, bytes, int, float, bool, None (pickle opcodes, no code) and numpy arrays,
dtypes and scalars (numpy's own reconstruct functions, under both the `numpy.core` names that numpy 1.x
writes and the `numpy._core` names of numpy 2.x). Any other global is refused with `RefusedGlobal`
before it is imported.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """The functions numpy pickles arrays and scalars with, taken from numpy itself (so this numpy's
    own functions answer to both its and the other major version's module names)."""
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct
    scalar = np.float32(0).__reduce__()[0]  # multiarray.scalar
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (pickle protocol 5)
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


ALLOWED_GLOBALS = _numpy_reconstructors()
WHAT_IS_ALLOWED = "dicts, lists, tuples, strings, numbers, booleans, None and numpy arrays, dtypes and scalars"


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside `ALLOWED_GLOBALS` (a function or class that could run code)."""

    def __init__(self, module: str, name: str):
        self.global_name = f"{module}.{name}"
        super().__init__(f"refused to load global {self.global_name!r}: a dataset file may hold only {WHAT_IS_ALLOWED}")


class DatasetUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array/dtype/scalar reconstructors; nothing is imported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id: a dataset file holds no external references")


def load_npy(path: str | Path) -> np.ndarray:
    """The array in a .npy file; an object array is rebuilt by `DatasetUnpickler`.

    Raises RefusedGlobal for a pickle that asks for anything else, and pickle/numpy/OS errors for files
    that are not .npy files (the caller names the file)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if not dtype.hasobject:
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        array = DatasetUnpickler(f, encoding="ASCII").load()
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise pickle.UnpicklingError(f"the pickle after the header is not the {shape} object array the header declares")
    return array
