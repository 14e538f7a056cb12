"""Our own run format: particles, fields, θ_sim, z, PM geometry and metadata in one HDF5 file.

Layout (format ``jaxcluster-run``, version 1)::

    /                       attrs: format, format_version, redshift, scale_factor, metadata_json
    /config                 attrs: box_size_Mpc_h (3,), particle_shape (3,), mesh_shape (3,), gradient
    /particles/pos          (n_ptcl, 3) comoving positions [h⁻¹ Mpc]          attr units
    /particles/p            (n_ptcl, 3) momenta p = a³E dx/da [h⁻¹ Mpc]        attr units
    /fields/<name>          any array (e.g. n_e_cm3, T_keV)                     attr units (optional)
    /theta                  (6,) θ_sim in PARAM_NAMES order                   attr names

Arrays are stored with their dtype, so a save/load roundtrip is exact.
Metadata is a JSON object (str keys, JSON values), stored as one attribute.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..nbody.config import PMConfig
from ..params import PARAM_NAMES, ThetaSim

__all__ = ["RunData", "save_run", "load_run", "RUN_FORMAT", "RUN_FORMAT_VERSION"]

RUN_FORMAT = "jaxcluster-run"
RUN_FORMAT_VERSION = 1
_POS_UNITS = "h^-1 Mpc (comoving)"
_P_UNITS = "h^-1 Mpc (p = a^3 E dx/da)"


@dataclasses.dataclass(frozen=True)
class RunData:
    """A run read back by `load_run`.

    Attributes:
        pos: (n_ptcl, 3) comoving positions [h⁻¹ Mpc].
        p: (n_ptcl, 3) momenta p = a³E dx/da [h⁻¹ Mpc].
        fields: named arrays (e.g. ``n_e_cm3`` comoving [cm⁻³], ``T_keV`` [keV]).
        field_units: units string of each field that had one when saved.
        theta: the simulation parameters θ_sim.
        z: redshift of the run's output.
        config: PM geometry.
        metadata: free-form JSON metadata.
    """

    pos: Float[Array, "n_ptcl 3"]
    p: Float[Array, "n_ptcl 3"]
    fields: dict[str, Array]
    field_units: dict[str, str]
    theta: ThetaSim
    z: float
    config: PMConfig
    metadata: dict[str, Any]


def save_run(
    path: str | Path,
    *,
    pos: Float[ArrayLike, "n_ptcl 3"],
    p: Float[ArrayLike, "n_ptcl 3"],
    fields: dict[str, ArrayLike],
    theta: ThetaSim,
    z: float,
    config: PMConfig,
    metadata: dict[str, Any] | None = None,
    field_units: dict[str, str] | None = None,
) -> None:
    """Write a run to an HDF5 file (overwriting it).

    Args:
        path: output file.
        pos: (n_ptcl, 3) comoving positions [h⁻¹ Mpc], n_ptcl = config.n_particles.
        p: (n_ptcl, 3) momenta p = a³E dx/da [h⁻¹ Mpc].
        fields: named arrays; names must be non-empty and contain no '/'.
        theta: θ_sim, one scalar per parameter.
        z: redshift (> −1).
        config: PM geometry.
        metadata: JSON-serialisable dict (str keys).
        field_units: optional units string per field name.

    Raises:
        ValueError: shapes not matching `config`, a batched `theta`, bad field
            names, bad `z`, or metadata that is not JSON-serialisable.
    """
    pos_np, p_np = np.asarray(pos), np.asarray(p)
    expected = (config.n_particles, 3)
    if pos_np.shape != expected:
        raise ValueError(f"pos shape {pos_np.shape} must be {expected} (config.particle_shape {config.particle_shape})")
    if p_np.shape != expected:
        raise ValueError(f"p shape {p_np.shape} must be {expected} (config.particle_shape {config.particle_shape})")
    shapes = {name: np.shape(getattr(theta, name)) for name in PARAM_NAMES}
    if any(s != () for s in shapes.values()):
        raise ValueError(f"theta must be a single θ_sim (scalar fields), got field shapes {shapes}")
    theta_np = np.asarray(theta.to_array())
    z = float(z)
    if not (math.isfinite(z) and z > -1):
        raise ValueError(f"z = {z} must be finite and > -1")
    field_units = dict(field_units or {})
    for name in list(fields) + list(field_units):
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ValueError(f"field name {name!r} must be a non-empty string without '/'")
    unknown = set(field_units) - set(fields)
    if unknown:
        raise ValueError(f"field_units names {sorted(unknown)} are not in fields")
    try:
        metadata_json = json.dumps(dict(metadata or {}), allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable with str keys: {err}") from err

    from .atomic import atomic_path

    # atomically: a kill leaves the whole file or none (never a truncated HDF5 under the final name)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = RUN_FORMAT
        f.attrs["format_version"] = RUN_FORMAT_VERSION
        f.attrs["redshift"] = z
        f.attrs["scale_factor"] = 1.0 / (1.0 + z)
        f.attrs["metadata_json"] = metadata_json
        cfg = f.create_group("config")
        cfg.attrs["box_size_Mpc_h"] = np.asarray(config.box_size, dtype=np.float64)
        cfg.attrs["particle_shape"] = np.asarray(config.particle_shape, dtype=np.int64)
        cfg.attrs["mesh_shape"] = np.asarray(config.mesh_shape, dtype=np.int64)
        cfg.attrs["gradient"] = config.gradient
        part = f.create_group("particles")
        part.create_dataset("pos", data=pos_np).attrs["units"] = _POS_UNITS
        part.create_dataset("p", data=p_np).attrs["units"] = _P_UNITS
        grp = f.create_group("fields")
        for name, value in fields.items():
            ds = grp.create_dataset(name, data=np.asarray(value))
            if name in field_units:
                ds.attrs["units"] = field_units[name]
        th = f.create_dataset("theta", data=theta_np)
        th.attrs["names"] = np.asarray(PARAM_NAMES, dtype=h5py.string_dtype())


def _get(f: h5py.File, name: str, path: Path):
    if name not in f:
        raise ValueError(f"run file {path}: {name!r} is missing")
    return f[name]


def _attr(obj, name: str, path: Path):
    if name not in obj.attrs:
        raise ValueError(f"run file {path}: attribute {name!r} of {obj.name!r} is missing")
    return obj.attrs[name]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_run(path: str | Path) -> RunData:
    """Read a run written by `save_run`.

    Args:
        path: the HDF5 file.

    Returns:
        `RunData`, arrays as JAX arrays with their stored dtypes (float64 needs x64).

    Raises:
        ValueError: not a jaxcluster run file, an unsupported version, a missing
            group, dataset or attribute, particles of the wrong shape or dtype for the
            stored configuration, non-finite values, or θ outside the prior (the message
            names the file and the problem).
    """
    from .checks import LoadError, check_array, open_hdf5

    path = Path(path)
    with open_hdf5(path, "run file") as f:
        fmt = _text(f.attrs.get("format", ""))
        if fmt != RUN_FORMAT:
            raise ValueError(f"run file {path}: attribute 'format' is {fmt!r}, expected {RUN_FORMAT!r}")
        version = int(_attr(f, "format_version", path))
        if version != RUN_FORMAT_VERSION:
            raise ValueError(f"run file {path}: format_version {version} is not supported ({RUN_FORMAT_VERSION})")
        z = float(_attr(f, "redshift", path))
        if not (math.isfinite(z) and z > -1):
            raise LoadError(f"run file {path}: redshift = {z} must be finite and > -1")
        try:
            metadata = json.loads(_text(_attr(f, "metadata_json", path)))
        except json.JSONDecodeError as err:
            raise LoadError(f"run file {path}: attribute 'metadata_json' is not JSON ({err})") from None
        cfg = _get(f, "config", path)
        try:
            config = PMConfig(
                box_size=tuple(float(b) for b in _attr(cfg, "box_size_Mpc_h", path)),
                particle_shape=tuple(int(n) for n in _attr(cfg, "particle_shape", path)),
                mesh_shape=tuple(int(n) for n in _attr(cfg, "mesh_shape", path)),
                gradient=_text(_attr(cfg, "gradient", path)),
            )
        except (ValueError, TypeError) as err:
            raise LoadError(f"run file {path}: the PM configuration in /config is invalid ({err})") from None
        want = (config.n_particles, 3)
        pos = np.asarray(_get(f, "particles/pos", path)[()])
        p = np.asarray(_get(f, "particles/p", path)[()])
        check_array(path, "particles/pos", pos, shape=want)
        check_array(path, "particles/p", p, shape=want)
        grp = _get(f, "fields", path)
        fields = {name: np.asarray(grp[name][()]) for name in grp}
        for name, a in fields.items():
            check_array(path, f"fields/{name}", a, kind="fiub", finite=True)
        field_units = {name: _text(grp[name].attrs["units"]) for name in grp if "units" in grp[name].attrs}
        th = _get(f, "theta", path)
        names = tuple(_text(n) for n in _attr(th, "names", path))
        values = np.asarray(th[()])
    if names != PARAM_NAMES or values.shape != (len(PARAM_NAMES),):
        raise ValueError(f"run file {path}: 'theta' must hold {PARAM_NAMES}, got names {names}, shape {values.shape}")
    check_array(path, "theta", values)
    try:
        theta = ThetaSim(**{n: values[i] for i, n in enumerate(PARAM_NAMES)})
    except ValueError as err:
        raise ValueError(f"run file {path}: 'theta' is outside the prior ({err})") from None
    return RunData(
        pos=jnp.asarray(pos), p=jnp.asarray(p), fields={k: jnp.asarray(v) for k, v in fields.items()},
        field_units=field_units, theta=theta, z=z, config=config, metadata=metadata,
    )
