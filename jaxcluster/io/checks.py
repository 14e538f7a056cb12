"""Checks of what a loader read: structure, shapes, dtypes, finiteness; each failure names the file and the problem.

Every loader of the package (`inference.load_dataset`, `io.load_run`,
`inference.load_compressor`, `fields.load_cutouts`, the CAMELS and snapshot
readers) refuses a file that is not what it claims to be with a `ValueError`
whose message starts with the file's path, instead of handing arrays of the
wrong kind (or NaNs) to the code after it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["LoadError", "check_array", "check_finite_blocks", "open_hdf5"]


class LoadError(ValueError):
    """A file that is missing, unreadable or not what its loader expects (the message names the file)."""


def open_hdf5(path: str | os.PathLike, what: str):
    """`h5py.File(path, "r")`, with a `LoadError` naming the file when it is missing or not HDF5."""
    import h5py

    if not os.path.exists(path):
        raise LoadError(f"{what} {path} does not exist")
    if os.path.isdir(path):
        raise LoadError(f"{what} {path} is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise LoadError(f"{what} {path} is not a readable HDF5 file ({err})") from None


def check_array(path, name: str, a, *, ndim: int | None = None, kind: str = "f", shape: Sequence[int | None] | None = None,
                finite: bool = True, nonnegative: bool = False) -> None:
    """Refuse an array read from `path` whose rank, dtype kind, shape or values are wrong.

    Args:
        path: the file (for the message).
        name: the array's name in the file.
        a: a numpy array or an h5py dataset (values are checked only for numpy arrays).
        ndim: required rank.
        kind: allowed numpy dtype kinds ("f" float, "i" integer, "u" unsigned, "b" bool; several: "iu").
        shape: required shape, None entries free.
        finite: refuse NaN and ±inf (float arrays).
        nonnegative: refuse negative values.

    Raises:
        LoadError: naming the file, the array and the problem.
    """
    dt = np.dtype(a.dtype)
    if dt.kind not in kind:
        kinds = {"f": "floating-point", "i": "integer", "u": "unsigned integer", "b": "boolean"}
        raise LoadError(f"{path}: {name!r} has dtype {dt}, expected a {' or '.join(kinds.get(k, k) for k in kind)} "
                        "array")
    if ndim is not None and len(a.shape) != ndim:
        raise LoadError(f"{path}: {name!r} has shape {tuple(a.shape)}, expected {ndim} axes")
    if shape is not None:
        if len(shape) != len(a.shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise LoadError(f"{path}: {name!r} has shape {tuple(a.shape)}, expected {want}")
    if isinstance(a, np.ndarray) and a.size:
        _check_values(path, name, a, finite, nonnegative)


def _check_values(path, name, a: np.ndarray, finite: bool, nonnegative: bool, offset: int = 0) -> None:
    if finite and a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.argwhere(bad)[0]
            first[0] += offset
            raise LoadError(f"{path}: {name!r} holds {int(bad.sum())} non-finite value(s) (NaN or inf) in the rows "
                            f"read, the first at index {tuple(int(i) for i in first)}")
    if nonnegative and a.dtype.kind in "fi" and (a < 0).any():
        first = np.argwhere(a < 0)[0]
        first[0] += offset
        raise LoadError(f"{path}: {name!r} holds negative values (counts must be >= 0), the first at index "
                        f"{tuple(int(i) for i in first)}")


def check_finite_blocks(path, name: str, ds, *, nonnegative: bool = False, block_bytes: int = 2**26) -> None:
    """`check_array`'s value checks over a whole h5py dataset, read in blocks of rows (bounded memory)."""
    n = int(ds.shape[0]) if ds.shape else 0
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(1, block_bytes // row)
    for start in range(0, n, step):
        _check_values(path, name, np.asarray(ds[start:start + step]), True, nonnegative, offset=start)
