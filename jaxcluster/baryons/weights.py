"""Saving and loading trained eLDL weights, and the shipped default.

A weights file ``<name>.eqx`` (`eqx.tree_serialise_leaves`) travels with a
``<name>.json`` holding what is needed to rebuild the module's structure
(`ExtendedLDL.init` arguments) and free-form metadata: the training data,
the metrics, the library version. Loading builds the structure and reads
the leaves into it, so nothing but arrays is stored in the binary file.

The default weights, ``jaxcluster/data/eldl_default.eqx``, were trained on
the **synthetic** CAMELS-like sets (`jaxcluster.baryons.training_sets`);
their JSON says with which data and with what validation losses.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .eldl import ExtendedLDL

__all__ = ["ELDL_FORMAT", "save_eldl", "load_eldl", "default_eldl", "DEFAULT_ELDL_FILE"]

ELDL_FORMAT = "jaxcluster-eldl"
_VERSION = 1
DEFAULT_ELDL_FILE = "eldl_default.eqx"


def save_eldl(path: str | os.PathLike, model: ExtendedLDL, structure: dict[str, Any], metadata: dict[str, Any] | None = None):
    """Write `model` to ``path`` (.eqx) and its structure and metadata to the sibling .json.

    Args:
        path: the .eqx file.
        model: trained `ExtendedLDL`.
        structure: keyword arguments of `ExtendedLDL.init` that rebuild this
            model's shapes (e.g. ``{"filter": "bspline", "redshifts": [...]}``).
        metadata: JSON-serialisable description (training data, metrics, ...).
    """
    path = Path(path)
    from .. import __version__

    info = {"format": ELDL_FORMAT, "format_version": _VERSION, "jaxcluster_version": __version__,
            "structure": structure, "metadata": dict(metadata or {})}
    text = json.dumps(info, indent=1, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    eqx.tree_serialise_leaves(tmp, model)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(text)


def _structure_kwargs(structure: dict[str, Any]) -> dict[str, Any]:
    kw = dict(structure)
    if "redshifts" in kw:
        kw["redshifts"] = tuple(float(z) for z in kw["redshifts"])
    return kw


def _read_leaf(f, like):
    """Read an array leaf in `like`'s dtype, whatever dtype it was stored in."""
    if eqx.is_array(like):
        return jnp.asarray(np.load(f), dtype=like.dtype)
    return eqx.default_deserialise_filter_spec(f, like)


def load_eldl(path: str | os.PathLike) -> tuple[ExtendedLDL, dict[str, Any]]:
    """Read a model written by `save_eldl` (as float32); returns (model, info) with info the JSON contents.

    Raises:
        ValueError: a missing file, or a JSON of another format or version.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ValueError(f"eLDL weights need both {path} and {meta_path}")
    info = json.loads(meta_path.read_text())
    if info.get("format") != ELDL_FORMAT or info.get("format_version") != _VERSION:
        raise ValueError(f"{meta_path} is not a {ELDL_FORMAT} v{_VERSION} file")
    # Weights are float32 (the pipeline's field precision), whether they were trained
    # with x64 on or not and whether x64 is on now.
    with jax.enable_x64(False):
        like = ExtendedLDL.init(jax.random.key(0), **_structure_kwargs(info["structure"]))
    return eqx.tree_deserialise_leaves(path, like, filter_spec=_read_leaf), info


def default_eldl() -> ExtendedLDL:
    """The shipped eLDL, trained on the synthetic CAMELS-like sets (read afresh on each call)."""
    with importlib.resources.as_file(importlib.resources.files("jaxcluster").joinpath("data", DEFAULT_ELDL_FILE)) as p:
        model, _ = load_eldl(p)
    return model
