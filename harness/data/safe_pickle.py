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

A pickled dtype carries a state (byte order, item size, flags...) that numpy's `__setstate__` takes as
given: a crafted one can declare an object dtype that "holds no objects", and an array of it then reads
its raw bytes as object pointers (a crash, or worse, on first use). So every dtype an array, a scalar or
a buffer is built with, and every dtype in the result, must agree with the dtype numpy builds from its
own description; `np.ndarray` cannot be called directly (only `_reconstruct` makes arrays), and the arrays
`_reconstruct` makes check their dtype before they take their state.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np


ALIGNED_STRUCT = 0x80  # numpy's NPY_ALIGNED_STRUCT dtype flag: a structured dtype made with align=True


class RefusedDtype(pickle.UnpicklingError):
    """A pickled dtype whose state contradicts what numpy builds from its description."""


def check_dtype(dtype: np.dtype) -> np.dtype:
    """`dtype`, if numpy's own dtype of its description has the same fields, item size and flags."""
    from numpy.lib.format import descr_to_dtype, dtype_to_descr

    try:
        descr = dtype_to_descr(dtype)
        canonical = descr_to_dtype(descr)
    except (TypeError, ValueError, KeyError) as e:
        raise RefusedDtype(f"refused a dtype numpy cannot describe ({e})") from None
    if dtype.names is not None and dtype.hasobject:  # its object fields would hide arrays from `plain`'s checks
        raise RefusedDtype(f"refused a structured dtype holding objects ({descr!r}): a dataset file holds none")
    flags = dtype.flags & ~ALIGNED_STRUCT  # the description does not say align=True; nothing else differs
    if canonical != dtype or (canonical.itemsize, canonical.flags) != (dtype.itemsize, flags):
        raise RefusedDtype(f"refused a dtype whose pickled state contradicts its description {descr!r}: item "
                           f"size {dtype.itemsize}, flags {dtype.flags} (numpy's own: {canonical.itemsize}, "
                           f"{canonical.flags})")
    return dtype


class _CheckedArray(np.ndarray):
    """What `_reconstruct` makes while unpickling: its dtype is checked before the array takes its state."""

    def __setstate__(self, state: Any) -> None:
        for item in state if isinstance(state, tuple) else ():
            if isinstance(item, np.dtype):
                check_dtype(item)
        super().__setstate__(state)


class _NdarrayName:
    """`numpy.ndarray` in a pickle: only `_reconstruct`'s first argument, never called (an array over a buffer)."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise pickle.UnpicklingError("refused a call of numpy.ndarray: a dataset file's arrays come from _reconstruct")


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """The functions numpy pickles arrays and scalars with, taken from numpy itself (so this numpy's
    own functions answer to both its and the other major version's module names), each checking the dtype
    it is given."""
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct
    scalar = np.float32(0).__reduce__()[0]  # multiarray.scalar
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (pickle protocol 5)

    def checked_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
        if not isinstance(cls, _NdarrayName):
            raise pickle.UnpicklingError(f"refused _reconstruct of {cls!r}: a dataset file holds plain numpy arrays")
        if isinstance(typecode, np.dtype):  # an array of it needs no state to exist
            check_dtype(typecode)
        return reconstruct(_CheckedArray, shape, typecode)

    def checked_scalar(dtype: np.dtype, *args: Any) -> Any:
        return scalar(check_dtype(dtype), *args)

    def checked_frombuffer(buffer: Any, dtype: np.dtype, *args: Any) -> np.ndarray:
        return frombuffer(buffer, check_dtype(dtype), *args)

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NdarrayName(), ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = checked_reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = checked_scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = checked_frombuffer
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
        array = plain(DatasetUnpickler(f, encoding="ASCII").load())
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise pickle.UnpicklingError(f"the pickle after the header is not the {shape} object array the header declares")
    return array


def plain(value: Any) -> Any:
    """An unpickled value with its `_CheckedArray`s as plain ndarrays (views) and every dtype in it checked;
    containers are changed in place (a pickle may share them or make cycles)."""
    done: dict[int, Any] = {}

    def walk(obj: Any) -> Any:
        if id(obj) in done:
            return done[id(obj)]
        if isinstance(obj, np.ndarray):
            check_dtype(obj.dtype)
            done[id(obj)] = out = obj.view(np.ndarray) if isinstance(obj, _CheckedArray) else obj
            if out.dtype.hasobject:  # not structured (check_dtype refuses those that hold objects)
                for index in np.ndindex(out.shape):
                    out[index] = walk(out[index])
            return out
        done[id(obj)] = obj
        if isinstance(obj, np.dtype):
            check_dtype(obj)
        elif isinstance(obj, list):
            obj[:] = [walk(v) for v in obj]
        elif isinstance(obj, dict):
            for k in obj:
                obj[k] = walk(obj[k])
        elif isinstance(obj, tuple):
            done[id(obj)] = tuple(walk(v) for v in obj)  # a tuple in a cycle goes through a list or a dict
        return done[id(obj)]

    try:
        return walk(value)
    except RecursionError:
        raise pickle.UnpicklingError("the pickle nests its containers too deeply for a dataset file") from None
