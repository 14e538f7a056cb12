"""The products of an inference: posterior samples (HDF5), a summary table (ECSV) and a corner plot.

`jaxcluster npe infer` (a neural posterior) and `jaxcluster hmc --xod` (NUTS on
the analytic model) write the same three files, so the two posteriors of one
observed XOD compare directly:

* ``posterior.h5``: dataset ``samples`` (L, d) float64, attributes
  ``param_names``, ``method``, ``truth`` (when known) and ``provenance`` (JSON);
* ``posterior_summary.ecsv``: one row per parameter: mean, standard deviation,
  median, the central 68 % and 95 % intervals, the truth;
* ``corner.png``: 1-D and 2-D marginals with the truth.

Files are written under a temporary name and renamed into place, so a kill
never leaves a partial product.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Float

__all__ = ["posterior_table", "write_posterior", "read_posterior", "POSTERIOR_FILES"]

POSTERIOR_FILES = ("posterior.h5", "posterior_summary.ecsv", "corner.png")


def posterior_table(samples: Float[ArrayLike, "L d"], names: Sequence[str],
                    truth: Float[ArrayLike, " d"] | None = None) -> Any:
    """Per-parameter summary of posterior samples as an `astropy.table.Table`.

    Columns: ``name``, ``mean``, ``std``, ``median``, ``lo68``, ``hi68``,
    ``lo95``, ``hi95`` (central intervals: the 16/84 and 2.5/97.5
    percentiles) and, when ``truth`` is given, ``truth`` and ``pull`` ((mean − truth)/std).
    """
    from astropy.table import Table

    s = np.asarray(samples, np.float64)
    if s.ndim != 2 or s.shape[1] != len(names):
        raise ValueError(f"samples must be (L, {len(names)}), got {s.shape}")
    q = np.percentile(s, [2.5, 16.0, 50.0, 84.0, 97.5], axis=0)
    t = Table()
    t["name"] = list(names)
    t["mean"], t["std"], t["median"] = s.mean(0), s.std(0, ddof=1), q[2]
    t["lo68"], t["hi68"], t["lo95"], t["hi95"] = q[1], q[3], q[0], q[4]
    if truth is not None:
        tv = np.asarray(truth, np.float64)
        t["truth"] = tv
        t["pull"] = (t["mean"] - tv) / t["std"]
    for c in t.colnames[1:]:
        t[c].info.format = ".5g"
    return t


def write_posterior(out: str | os.PathLike, samples: Float[ArrayLike, "L d"], names: Sequence[str], *,
                    method: str, provenance: Mapping[str, Any], truth: Float[ArrayLike, " d"] | None = None,
                    extra: Mapping[str, Any] | None = None, figure: bool = True,
                    compare: Mapping[str, Float[ArrayLike, "M d"]] | None = None) -> dict[str, Path]:
    """Write ``posterior.h5``, ``posterior_summary.ecsv`` and ``corner.png`` to ``out`` (module docstring).

    Args:
        out: output folder (created).
        samples: (L, d) posterior samples.
        names: the d parameter names.
        method: how they were drawn (``"npe (mdn)"``, ``"nuts (analytic)"``, …).
        provenance: a `jaxcluster.io.provenance.provenance` record.
        truth: (d,) the true parameters, when known.
        extra: more attributes for the HDF5 file (JSON-ready values).
        figure: also write the corner plot.
        compare: other posteriors of the same parameters ``{label: (M, d) samples}``, drawn in the
            corner plot too (e.g. the NUTS posterior of the same XOD).

    Returns:
        ``{"samples": path, "summary": path, "corner": path}`` (no ``corner`` without ``figure``).
    """
    import h5py

    from ..io.atomic import atomic_path
    from ..io.provenance import clean_json
    from .diagnostics import corner_plot

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = np.asarray(samples, np.float64)
    table = posterior_table(s, names, truth)
    table.meta["method"] = method
    table.meta["provenance"] = clean_json(dict(provenance))
    paths = {"samples": out / "posterior.h5", "summary": out / "posterior_summary.ecsv"}

    with atomic_path(paths["samples"]) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("samples", data=s)
        f.attrs["param_names"] = [str(n) for n in names]
        f.attrs["method"] = method
        f.attrs["provenance"] = json.dumps(clean_json(dict(provenance)), sort_keys=True)
        if truth is not None:
            f.attrs["truth"] = np.asarray(truth, np.float64)
        for k, v in (extra or {}).items():
            f.attrs[k] = json.dumps(clean_json(v), sort_keys=True) if isinstance(v, Mapping) else v
    with atomic_path(paths["summary"]) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    if figure:
        import matplotlib.pyplot as plt

        paths["corner"] = out / "corner.png"
        sets = {method: s, **{k: np.asarray(v, np.float64) for k, v in (compare or {}).items()}}
        fig = corner_plot(sets, list(names), truth=truth, title=f"posterior: {method}")
        with atomic_path(paths["corner"]) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    return paths


def read_posterior(path: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    """Read ``posterior.h5``: (samples (L, d), names, attributes with ``provenance`` parsed)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no posterior file")
    with h5py.File(path, "r") as f:
        if "samples" not in f or "param_names" not in f.attrs:
            raise ValueError(f"{path} is not a jaxcluster posterior (no 'samples' or 'param_names')")
        samples = np.asarray(f["samples"])
        names = tuple(str(n) for n in f.attrs["param_names"])
        attrs = {k: f.attrs[k] for k in f.attrs if k != "param_names"}
    if "provenance" in attrs:
        attrs["provenance"] = json.loads(attrs["provenance"])
    if samples.ndim != 2 or samples.shape[1] != len(names):
        raise ValueError(f"{path}: samples of shape {samples.shape} do not match {len(names)} parameter names")
    return samples, names, attrs
