"""Saving and loading trained eLDL weights, and the shipped default.

A weights file ``<name>.eqx`` (`eqx.tree_serialise_leaves`) travels with a
``<name>.json`` holding what is needed to rebuild the module's structure
(`ExtendedLDL.init` arguments) and free-form metadata: the training data,
the metrics, the library version. Loading builds the structure and reads
the leaves into it, so nothing but arrays is stored in the binary file.

The pair is written JSON first, weights second, each atomically
(`jaxcluster.io.atomic`), and the JSON (format version 2) records the
SHA-256 of the weights file: a kill between the two writes leaves a JSON
that does not match the weights beside it, and `load_eldl` refuses the pair
(naming both files) instead of pairing new weights with old metadata.
Version-1 JSONs (no digest) are still read.

The default weights, ``jaxcluster/data/eldl_default.eqx``, were trained on
the **synthetic** CAMELS-like sets (`jaxcluster.baryons.training_sets`);
their JSON says with which data and with what validation losses.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
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
_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # 1: no weights digest
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
    from .. import __version__
    from ..io.atomic import atomic_path, write_json

    path = Path(path)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, model)
    weights = buf.getvalue()
    info = {"format": ELDL_FORMAT, "format_version": _VERSION, "jaxcluster_version": __version__,
            "structure": structure, "metadata": dict(metadata or {}),
            "weights_sha256": hashlib.sha256(weights).hexdigest()}
    # JSON first: a kill before the weights' rename leaves a JSON whose digest the old weights fail.
    write_json(path.with_suffix(".json"), info)
    with atomic_path(path) as tmp:
        tmp.write_bytes(weights)


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
        ValueError: a missing file; a JSON that does not parse or is of another format or version; weights
            whose SHA-256 differs from the JSON's (an interrupted save); weights of another structure
            (e.g. another redshift list). Each names the file.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ValueError(f"eLDL weights need both {path} and {meta_path}")
    try:
        info = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}): the eLDL metadata file is corrupt") from None
    if not isinstance(info, dict) or info.get("format") != ELDL_FORMAT or info.get("format_version") not in _READABLE_VERSIONS:
        raise ValueError(f"{meta_path} is not a {ELDL_FORMAT} v{_VERSION} file")
    structure = info.get("structure")
    if not isinstance(structure, dict):
        raise ValueError(f"{meta_path} has no 'structure' object")
    weights = path.read_bytes()
    if info["format_version"] >= 2:
        digest = hashlib.sha256(weights).hexdigest()
        if digest != info.get("weights_sha256"):
            raise ValueError(f"{path} (SHA-256 {digest[:12]}…) is not the weights {meta_path} describes "
                             f"(SHA-256 {str(info.get('weights_sha256'))[:12]}…): a save was interrupted or a file "
                             "was replaced; rerun the command that wrote them")
    # Weights are float32 (the pipeline's field precision), whether they were trained
    # with x64 on or not and whether x64 is on now.
    try:
        with jax.enable_x64(False):
            like = ExtendedLDL.init(jax.random.key(0), **_structure_kwargs(structure))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{meta_path}: its structure {structure} does not build an eLDL ({err})") from None
    f = io.BytesIO(weights)
    try:
        model = eqx.tree_deserialise_leaves(f, like, filter_spec=_read_leaf)
    except (ValueError, EOFError, OSError, RuntimeError) as err:
        raise ValueError(f"{path} does not hold the weights of the structure in {meta_path} "
                         f"({type(err).__name__}: {err})") from None
    bad = [f"{jax.tree_util.keystr(k)}: {np.shape(a)} stored, {np.shape(b)} expected"
           for (k, a), b in zip(jax.tree_util.tree_leaves_with_path(eqx.filter(model, eqx.is_array)),
                                jax.tree.leaves(eqx.filter(like, eqx.is_array)))
           if np.shape(a) != np.shape(b)]
    if bad or f.read(1):
        raise ValueError(f"{path} does not hold the weights of the structure in {meta_path} "
                         f"(redshifts {structure.get('redshifts')}): "
                         + ("; ".join(bad[:3]) if bad else "the file holds more arrays than the structure has"))
    return model, info


def default_eldl() -> ExtendedLDL:
    """The shipped eLDL, trained on the synthetic CAMELS-like sets (read afresh on each call)."""
    with importlib.resources.as_file(importlib.resources.files("jaxcluster").joinpath("data", DEFAULT_ELDL_FILE)) as p:
        model, _ = load_eldl(p)
    return model
