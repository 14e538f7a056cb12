"""An observed XOD read from any file the package writes, and the check that its bins match a model's.

Two kinds of file hold XODs: ``xod.npz`` from ``jaxcluster simulate`` (one
XOD, its bin edges, the θ_sim it was made at) and the HDF5 datasets of
``jaxcluster dataset generate`` (many XODs, their θ and, since format 2, the
bin edges in the ``xod_edges`` attribute). `read_xod` reads either;
`check_binning` refuses an XOD whose bins are not those a posterior was
trained on, naming the axis that differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["ObservedXOD", "read_xod", "check_binning", "AXES"]

AXES = ("cr", "hr", "z")  # the XOD's axes, in order: CR[0.5–2] [counts s⁻¹], HR, z


class ObservedXOD(NamedTuple):
    """One XOD and what its file says about it.

    Attributes:
        xod: (n_cr, n_hr, n_z) counts.
        edges: ``{"cr": (n_cr + 1,), "hr": (n_hr + 1,), "z": (n_z + 1,)}`` bin edges, or None if the file has none.
        truth: (d,) the parameters the XOD was simulated at, or None.
        names: names of ``truth`` (empty if unknown).
        area_deg2: the survey area the XOD covers [deg²], or None.
        source: where it came from (``path`` or ``path[index]``).
    """

    xod: np.ndarray
    edges: dict[str, np.ndarray] | None
    truth: np.ndarray | None
    names: tuple[str, ...]
    area_deg2: float | None
    source: str


def _edges_from(mapping) -> dict[str, np.ndarray] | None:
    if all(f"{a}_edges" in mapping for a in AXES):
        return {a: np.asarray(mapping[f"{a}_edges"], np.float64) for a in AXES}
    return None


def read_xod(path: str | os.PathLike, index: int | None = None) -> ObservedXOD:
    """Read one XOD from ``xod.npz`` (``jaxcluster simulate``) or from a dataset (HDF5, sample ``index``).

    Args:
        path: the file.
        index: which sample of a dataset (required for a dataset, refused for an ``.npz``).

    Raises:
        ValueError: the file is missing, of another kind, or ``index`` is missing or out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--xod {path}: no such file")
    if path.suffix == ".npz":
        if index is not None:
            raise ValueError(f"--index is for datasets; {path} holds one XOD")
        with np.load(path, allow_pickle=False) as f:
            if "xod" not in f:
                raise ValueError(f"--xod {path}: not an XOD file (no 'xod' array; `jaxcluster simulate` writes one)")
            xod = np.asarray(f["xod"], np.float64)
            edges = _edges_from(f)
            truth = np.asarray(f["theta"], np.float64) if "theta" in f else None
            names = tuple(str(n) for n in f["theta_names"]) if "theta_names" in f else ()
            area = float(f["area_deg2"]) if "area_deg2" in f else None
        source = str(path)
    else:
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"--xod {path}: neither an .npz XOD nor an HDF5 dataset ({err})") from None
        with f:
            if "xod" not in f or "theta" not in f:
                raise ValueError(f"--xod {path}: not a jaxcluster dataset (no 'theta' and 'xod')")
            n = f["xod"].shape[0]
            if index is None:
                raise ValueError(f"--xod {path} is a dataset of {n} XODs: choose one with --index I (0 ≤ I < {n})")
            if not 0 <= index < n:
                raise ValueError(f"--index {index} is outside its allowed range [0, {n - 1}] for {path}")
            xod = np.asarray(f["xod"][index], np.float64)
            truth = np.asarray(f["theta"][index], np.float64)
            attrs = dict(f.attrs)
        names = tuple(str(v) for v in attrs.get("param_names", ()))
        edges = None
        if "xod_edges" in attrs:
            raw = json.loads(attrs["xod_edges"]) if isinstance(attrs["xod_edges"], str) else attrs["xod_edges"]
            edges = {a: np.asarray(raw[a], np.float64) for a in AXES}
        meta = attrs.get("metadata")
        meta = json.loads(meta) if isinstance(meta, str) else {}
        area = attrs.get("area_deg2", meta.get("area_deg2"))
        area = None if area is None else float(area)
        source = f"{path}[{index}]"
    if xod.ndim != 3:
        raise ValueError(f"--xod {source}: an XOD is (n_cr, n_hr, n_z), got shape {xod.shape}")
    if not np.all(np.isfinite(xod)) or np.any(xod < 0):
        raise ValueError(f"--xod {source}: counts must be finite and ≥ 0")
    return ObservedXOD(xod, edges, truth, names, area, source)


def check_binning(observed: ObservedXOD, shape: tuple[int, ...], edges: dict | None, *, what: str = "the model") -> None:
    """Refuse an XOD whose shape or bin edges differ from ``what``'s (relative tolerance 1e-6 on the edges).

    Args:
        observed: the XOD to check.
        shape: (n_cr, n_hr, n_z) the model expects.
        edges: the model's edges (``{"cr": …, "hr": …, "z": …}``), or None if unknown (then only the shape is checked).
        what: how the error names the model.

    Raises:
        ValueError: naming the axis and both sets of edges.
    """
    if tuple(observed.xod.shape) != tuple(shape):
        raise ValueError(f"the XOD of {observed.source} has shape {observed.xod.shape}, {what} expects {tuple(shape)}")
    if edges is None or observed.edges is None:
        return
    for a in AXES:
        mine, theirs = np.asarray(observed.edges[a]), np.asarray(edges[a], np.float64)
        if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=1e-6, atol=0.0):
            raise ValueError(f"the {a} bin edges of {observed.source} {np.round(mine, 6).tolist()} differ from "
                             f"{what}'s {np.round(theirs, 6).tolist()}: the XODs are not comparable")
