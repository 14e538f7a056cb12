r"""Gadget/AREPO HDF5 snapshots (CAMELS, IllustrisTNG): header, dark matter, gas voxelisation, PM restart.

Layout read (one file, or ``snap_NNN.0.hdf5 … snap_NNN.{k-1}.hdf5`` when the
header's ``NumFilesPerSnapshot`` is k > 1):

- ``Header`` attributes ``BoxSize``, ``Redshift``, ``HubbleParam``, ``Omega0``
  (required), ``MassTable``, ``NumPart_ThisFile``, ``NumFilesPerSnapshot``
  (optional: defaults zeros / counted / 1).
- ``PartType1`` (dark matter): ``Coordinates``, ``Velocities``, ``ParticleIDs``;
  particle mass from ``MassTable[1]`` (or a ``Masses`` dataset when that is 0).
- ``PartType0`` (gas): ``Coordinates``, ``Masses`` (or ``MassTable[0]``),
  ``ElectronAbundance``, ``InternalEnergy``.

Units are those of CAMELS/IllustrisTNG: lengths in ckpc/h (``length_unit_Mpc_h``
= 10⁻³ converts them to comoving h⁻¹ Mpc; pass 1 for snapshots written in
h⁻¹ Mpc), masses in 10¹⁰ h⁻¹ M☉, internal energy per unit mass u in (km/s)²,
``ElectronAbundance`` $x_e = n_e/n_H$, velocities in Gadget's $u/\sqrt{a}$
[km/s] where $u = a\,dx/dt$ is the peculiar velocity.

Physics of the gas fields (seed 001 §2.1), with $X_H = 0.76$:

$$μ = \frac{4}{1 + 3X_H + 4X_H x_e},\qquad k_B T = \tfrac23\, u\, μ\, m_p,$$

$$n_e(\text{voxel}) = \frac{1}{V_{\rm cell}} \sum_i w_i\, \frac{x_{e,i} X_H M_i}{m_p}
\quad\text{(comoving cm⁻³; physical} = \text{comoving}\,(1+z)^3),$$

$$T(\text{voxel}) = \frac{\sum_i w_i M_i T_i}{\sum_i w_i M_i}\quad\text{(keV; 0 where no gas reaches the voxel)},$$

with $w_i$ the cloud-in-cell weights of particle i on the voxel and
$V_{\rm cell}$ the comoving voxel volume in cm³ (lengths divided by h).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Float, Int

from ..nbody.config import PMConfig
from ..nbody.ic import momentum_from_velocity
from ..nbody.mesh import paint_cic

__all__ = [
    "X_H",
    "SnapshotHeader",
    "DarkMatter",
    "GasFields",
    "read_header",
    "read_dark_matter",
    "mean_molecular_weight",
    "temperature_keV",
    "voxelise_gas",
    "pm_initial_state",
]

# Hydrogen mass fraction of CAMELS/IllustrisTNG (primordial; seed 001 §2.1).
X_H: float = 0.76
# CODATA 2022 proton mass [g] (= astropy 8 constants.m_p; CODATA 2018 differs by 1.4e-9).
PROTON_MASS_G: float = 1.67262192595e-24
# 1 keV in erg (exact since the 2019 SI redefinition of the elementary charge).
KEV_ERG: float = 1.602176634e-9
# IAU 2015 nominal solar mass [g] (astropy.constants.M_sun, GM☉^N / G with CODATA G = 6.67430e-11).
SOLAR_MASS_G: float = 1.988409870698051e33
# 1 Mpc in cm (IAU 2012 astronomical unit, parsec = 648000/π au).
MPC_CM: float = 3.0856775814913673e24
# Gadget/AREPO mass unit 10¹⁰ h⁻¹ M☉ and CAMELS length unit ckpc/h = 10⁻³ h⁻¹ Mpc.
GADGET_MASS_UNIT_MSUN_H: float = 1e10
CKPC_H_IN_MPC_H: float = 1e-3
# (km/s)² to (cm/s)².
_KM2_TO_CM2: float = 1e10


@dataclasses.dataclass(frozen=True)
class SnapshotHeader:
    """The header of a Gadget/AREPO snapshot, in the snapshot's own units.

    Attributes:
        box_size: side of the cubic box in the snapshot length unit (ckpc/h for CAMELS).
        redshift: redshift z of the snapshot.
        hubble_param: h = H₀ / (100 km s⁻¹ Mpc⁻¹).
        omega0: total matter density Ω_m.
        mass_table_1e10Msun_h: per-type particle masses [10¹⁰ h⁻¹ M☉]; 0 means
            the type has a ``Masses`` dataset instead.
        num_files: ``NumFilesPerSnapshot`` (1 for a single-file snapshot).
        files: the snapshot files, in order (one per chunk).
    """

    box_size: float
    redshift: float
    hubble_param: float
    omega0: float
    mass_table_1e10Msun_h: tuple[float, float, float, float, float, float]
    num_files: int
    files: tuple[Path, ...]

    @property
    def scale_factor(self) -> float:
        """a = 1 / (1 + z)."""
        return 1.0 / (1.0 + self.redshift)

    def box_size_Mpc_h(self, length_unit_Mpc_h: float = CKPC_H_IN_MPC_H) -> float:
        """Box side in comoving h⁻¹ Mpc, given the snapshot length unit in h⁻¹ Mpc."""
        return self.box_size * length_unit_Mpc_h


class DarkMatter(NamedTuple):
    """Dark-matter particles of a snapshot (NumPy arrays, file order).

    Attributes:
        pos_Mpc_h: (n, 3) comoving positions [h⁻¹ Mpc].
        vel_km_s_gadget: (n, 3) velocities in Gadget's convention u/√a [km s⁻¹].
        ids: (n,) ``ParticleIDs``.
        mass_1e10Msun_h: (n,) particle masses [10¹⁰ h⁻¹ M☉].
    """

    pos_Mpc_h: Float[np.ndarray, "n 3"]
    vel_km_s_gadget: Float[np.ndarray, "n 3"]
    ids: Int[np.ndarray, " n"]
    mass_1e10Msun_h: Float[np.ndarray, " n"]


class GasFields(NamedTuple):
    """Voxelised gas fields on a periodic mesh.

    Attributes:
        n_e_cm3: comoving electron density [cm⁻³] (physical = comoving × (1+z)³).
        T_keV: mass-weighted temperature k_B T [keV]; 0 in voxels no gas reaches.
    """

    n_e_cm3: Float[Array, "nx ny nz"]
    T_keV: Float[Array, "nx ny nz"]


# ------------------------------------------------------------------ header and files


def _require_attr(attrs, name: str, where: str):
    if name not in attrs:
        raise ValueError(f"snapshot {where}: Header attribute {name!r} is missing")
    return attrs[name]


def _scalar(value, name: str, where: str) -> float:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"snapshot {where}: Header attribute {name!r} is empty")
    return float(arr[0])


def _chunk_paths(path: Path, num_files: int) -> tuple[Path, ...]:
    if num_files == 1:
        return (path,)
    match = re.fullmatch(r"(.*)\.0\.hdf5", path.name)
    if match is None:
        raise ValueError(
            f"snapshot {path}: NumFilesPerSnapshot = {num_files}; pass the first chunk, named '<base>.0.hdf5'"
        )
    paths = tuple(path.with_name(f"{match.group(1)}.{i}.hdf5") for i in range(num_files))
    for p in paths:
        if not p.is_file():
            raise ValueError(f"snapshot chunk {p} is missing (NumFilesPerSnapshot = {num_files})")
    return paths


def read_header(path: str | Path) -> SnapshotHeader:
    """Read the ``Header`` of a Gadget/AREPO HDF5 snapshot.

    Args:
        path: the snapshot file, or its first chunk ``<base>.0.hdf5`` for a
            multi-file snapshot.

    Returns:
        The header, with the list of chunk files.

    Raises:
        ValueError: missing file, ``Header`` group or required attribute, or
            non-physical values (box ≤ 0, z ≤ −1, h ≤ 0, Ω_m ≤ 0).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"snapshot file {path} does not exist")
    with h5py.File(path, "r") as f:
        if "Header" not in f:
            raise ValueError(f"snapshot {path}: group 'Header' is missing")
        attrs = f["Header"].attrs
        box = _scalar(_require_attr(attrs, "BoxSize", str(path)), "BoxSize", str(path))
        z = _scalar(_require_attr(attrs, "Redshift", str(path)), "Redshift", str(path))
        h = _scalar(_require_attr(attrs, "HubbleParam", str(path)), "HubbleParam", str(path))
        om = _scalar(_require_attr(attrs, "Omega0", str(path)), "Omega0", str(path))
        mass_table = np.zeros(6)
        if "MassTable" in attrs:
            mt = np.asarray(attrs["MassTable"], dtype=np.float64).reshape(-1)
            mass_table[: min(6, mt.size)] = mt[:6]
        num_files = int(_scalar(attrs["NumFilesPerSnapshot"], "NumFilesPerSnapshot", str(path))) if (
            "NumFilesPerSnapshot" in attrs) else 1
    if not (math.isfinite(box) and box > 0):
        raise ValueError(f"snapshot {path}: BoxSize = {box} must be positive")
    if not (math.isfinite(z) and z > -1):
        raise ValueError(f"snapshot {path}: Redshift = {z} must be > -1")
    if not (math.isfinite(h) and h > 0):
        raise ValueError(f"snapshot {path}: HubbleParam = {h} must be positive")
    if not (math.isfinite(om) and om > 0):
        raise ValueError(f"snapshot {path}: Omega0 = {om} must be positive")
    if num_files < 1:
        raise ValueError(f"snapshot {path}: NumFilesPerSnapshot = {num_files} must be >= 1")
    return SnapshotHeader(
        box_size=box, redshift=z, hubble_param=h, omega0=om,
        mass_table_1e10Msun_h=tuple(float(m) for m in mass_table),  # type: ignore[arg-type]
        num_files=num_files, files=_chunk_paths(path, num_files),
    )


def _iter_type_chunks(
    header: SnapshotHeader, part_type: int, fields: tuple[str, ...], chunk_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of the requested datasets of ``PartType{part_type}``, at most `chunk_size` rows each.

    ``Masses`` is filled from the mass table when absent and the table entry is
    positive. Files whose ``NumPart_ThisFile`` says 0 for this type are skipped.
    """
    group = f"PartType{part_type}"
    for file in header.files:
        with h5py.File(file, "r") as f:
            counts = f["Header"].attrs.get("NumPart_ThisFile") if "Header" in f else None
            if counts is not None and int(np.asarray(counts).reshape(-1)[part_type]) == 0 and group not in f:
                continue
            if group not in f:
                raise ValueError(f"snapshot {file}: group {group!r} is missing")
            g = f[group]
            for name in fields:
                if name not in g and not (name == "Masses" and header.mass_table_1e10Msun_h[part_type] > 0):
                    raise ValueError(f"snapshot {file}: dataset '{group}/{name}' is missing")
            n = g["Coordinates"].shape[0] if "Coordinates" in g else g[fields[0]].shape[0]
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                out = {}
                for name in fields:
                    if name in g:
                        data = np.asarray(g[name][start:stop])
                        if data.shape[0] != stop - start:
                            raise ValueError(f"snapshot {file}: dataset '{group}/{name}' has {g[name].shape[0]} rows, "
                                             f"Coordinates has {n}")
                        out[name] = data
                    else:  # Masses from the mass table
                        out[name] = np.full(stop - start, header.mass_table_1e10Msun_h[part_type])
                yield out


# ------------------------------------------------------------------ dark matter


def read_dark_matter(path: str | Path, *, length_unit_Mpc_h: float = CKPC_H_IN_MPC_H) -> DarkMatter:
    """Read the dark-matter particles (``PartType1``) of a snapshot.

    Args:
        path: snapshot file (or first chunk ``<base>.0.hdf5``).
        length_unit_Mpc_h: the snapshot length unit in h⁻¹ Mpc (10⁻³ for ckpc/h).

    Returns:
        `DarkMatter` with positions [h⁻¹ Mpc] wrapped into [0, L), velocities
        u/√a [km s⁻¹] as stored, IDs and masses [10¹⁰ h⁻¹ M☉], in file order.

    Raises:
        ValueError: missing group/dataset/attribute, or malformed shapes.
    """
    header = read_header(path)
    names = ("Coordinates", "Velocities", "ParticleIDs", "Masses")
    chunks = list(_iter_type_chunks(header, 1, names, chunk_size=2**62))
    if not chunks:
        raise ValueError(f"snapshot {path}: no dark-matter (PartType1) particles")
    cat = {k: np.concatenate([c[k] for c in chunks], axis=0) for k in names}
    for name in ("Coordinates", "Velocities"):
        if cat[name].ndim != 2 or cat[name].shape[1] != 3:
            raise ValueError(f"snapshot {path}: 'PartType1/{name}' must have shape (n, 3), got {cat[name].shape}")
    from .checks import check_array

    # positions and velocities are wrapped and differentiated downstream: a NaN or a string would go silently
    check_array(path, "PartType1/Coordinates", cat["Coordinates"], ndim=2, shape=(None, 3))
    check_array(path, "PartType1/Velocities", cat["Velocities"], ndim=2, shape=(None, 3))
    check_array(path, "PartType1/Masses", cat["Masses"], kind="f", nonnegative=True)
    if cat["ParticleIDs"].dtype.kind not in "iu":
        raise ValueError(f"snapshot {path}: 'PartType1/ParticleIDs' must be integers, got {cat['ParticleIDs'].dtype}")
    box = header.box_size_Mpc_h(length_unit_Mpc_h)
    pos = np.mod(cat["Coordinates"].astype(np.float64) * length_unit_Mpc_h, box)
    return DarkMatter(
        pos_Mpc_h=pos,
        vel_km_s_gadget=cat["Velocities"].astype(np.float64),
        ids=cat["ParticleIDs"].astype(np.int64).reshape(-1),
        mass_1e10Msun_h=cat["Masses"].astype(np.float64).reshape(-1),
    )


def pm_initial_state(
    path: str | Path,
    config: PMConfig,
    *,
    length_unit_Mpc_h: float = CKPC_H_IN_MPC_H,
    dtype: DTypeLike | None = None,
) -> tuple[Float[Array, "n_ptcl 3"], Float[Array, "n_ptcl 3"]]:
    r"""Positions and momenta to restart the PM engine from a snapshot's dark matter.

    Particles are sorted by ``ParticleIDs``: IC generators (N-GenIC, MUSIC as
    used by CAMELS) number the particles along the initial lattice in C order,
    so the sorted particles line up with `PMConfig.lattice`. Conversions:
    positions ckpc/h × 10⁻³ → h⁻¹ Mpc (wrapped into [0, L)); velocities
    $v_{\rm gadget} = u/\sqrt a$ → $u = v_{\rm gadget}\sqrt a$ → our momentum
    $p = a^3 E\,dx/da = a u / (100\ {\rm km\,s^{-1}})$ [h⁻¹ Mpc]
    (`momentum_from_velocity(..., gadget=True)`), with a = 1/(1+z) from the
    header. Start `nbody` at that a (`read_header(path).scale_factor`).

    Args:
        path: snapshot file (or first chunk).
        config: the PM geometry; its box and particle count must match the snapshot.
        length_unit_Mpc_h: the snapshot length unit in h⁻¹ Mpc.
        dtype: dtype of the outputs (default: JAX's default float).

    Returns:
        (pos [h⁻¹ Mpc], p [h⁻¹ Mpc]), each (n_ptcl, 3), in lattice (sorted-ID) order.

    Raises:
        ValueError: the box size or the particle count differ from `config`,
            or the IDs are not unique.
    """
    header = read_header(path)
    box = header.box_size_Mpc_h(length_unit_Mpc_h)
    if any(abs(b - box) > 1e-6 * box for b in config.box_size):
        raise ValueError(f"snapshot box size {box} h⁻¹ Mpc does not match config.box_size = {config.box_size}")
    dm = read_dark_matter(path, length_unit_Mpc_h=length_unit_Mpc_h)
    n = dm.ids.shape[0]
    if n != config.n_particles:
        raise ValueError(
            f"snapshot has {n} dark-matter particles but config.particle_shape = {config.particle_shape} "
            f"needs {config.n_particles}"
        )
    order = np.argsort(dm.ids, kind="stable")
    sorted_ids = dm.ids[order]
    if n > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise ValueError(f"snapshot {path}: 'PartType1/ParticleIDs' are not unique")
    dtype = dtype or jnp.result_type(float)
    pos = jnp.asarray(dm.pos_Mpc_h[order], dtype=dtype)
    vel = jnp.asarray(dm.vel_km_s_gadget[order], dtype=dtype)
    p = momentum_from_velocity(vel, jnp.asarray(header.scale_factor, dtype=dtype), gadget=True)
    return pos, p


# ------------------------------------------------------------------ gas


def mean_molecular_weight(x_e: Float[ArrayLike, "*n"], X_H: float = X_H) -> Float[ArrayLike, "*n"]:
    """Mean molecular weight μ = 4 / (1 + 3 X_H + 4 X_H x_e) of an H + He gas.

    Args:
        x_e: electron abundance n_e / n_H (NumPy or JAX array; the result has its type).
        X_H: hydrogen mass fraction.
    """
    return 4.0 / (1.0 + 3.0 * X_H + 4.0 * X_H * x_e)


def temperature_keV(
    u_km2_s2: Float[ArrayLike, "*n"], x_e: Float[ArrayLike, "*n"], X_H: float = X_H
) -> Float[ArrayLike, "*n"]:
    """Gas temperature k_B T = (2/3) u μ m_p [keV] from the internal energy per unit mass.

    Args:
        u_km2_s2: ``InternalEnergy`` u [(km/s)²].
        x_e: ``ElectronAbundance`` n_e / n_H.
        X_H: hydrogen mass fraction.

    Returns:
        k_B T [keV] (T in kelvin is this × 1.160451812e7).
    """
    mu = mean_molecular_weight(x_e, X_H)
    return (2.0 / 3.0) * u_km2_s2 * (_KM2_TO_CM2 * PROTON_MASS_G / KEV_ERG) * mu


_paint_jit = jax.jit(paint_cic, static_argnums=2)


def voxelise_gas(
    path: str | Path,
    *,
    mesh_shape: int | tuple[int, int, int] | None = None,
    cell_size_Mpc_h: float = 0.39,
    length_unit_Mpc_h: float = CKPC_H_IN_MPC_H,
    X_H: float = X_H,
    chunk_size: int = 2**21,
    dtype: DTypeLike | None = None,
) -> GasFields:
    """Voxelise the gas (``PartType0``) into comoving n_e [cm⁻³] and mass-weighted T [keV] with CIC.

    Voxel (i, j, k) is centred at (i, j, k) × cell, the node convention of
    `paint_cic` and the PM mesh. Each particle deposits x_e X_H M / m_p
    electrons, M and M·T with CIC weights; n_e is the electron count over the
    comoving voxel volume (cell/h)³ in cm³, T = Σ M T / Σ M (0 where Σ M = 0).
    Particles are painted `chunk_size` at a time, file by file.

    Args:
        path: snapshot file (or first chunk ``<base>.0.hdf5``).
        mesh_shape: voxels per side (or per axis); if None it is
            round(L / `cell_size_Mpc_h`) per axis (CAMELS: 25 → 64, 50 → 128).
        cell_size_Mpc_h: target voxel size [h⁻¹ Mpc], used when `mesh_shape` is None.
        length_unit_Mpc_h: the snapshot length unit in h⁻¹ Mpc (10⁻³ for ckpc/h).
        X_H: hydrogen mass fraction.
        chunk_size: particles painted per call.
        dtype: output dtype (default: JAX's default float).

    Returns:
        `GasFields(n_e_cm3, T_keV)`, each of shape `mesh_shape`.

    Raises:
        ValueError: bad `mesh_shape`/`cell_size_Mpc_h`/`chunk_size`, missing
            groups/datasets/attributes, no gas particles, or negative/non-finite
            masses, abundances or energies.
    """
    header = read_header(path)
    box = header.box_size_Mpc_h(length_unit_Mpc_h)
    if mesh_shape is None:
        if not (math.isfinite(cell_size_Mpc_h) and cell_size_Mpc_h > 0):
            raise ValueError(f"cell_size_Mpc_h = {cell_size_Mpc_h} must be positive")
        shape = (max(2, round(box / cell_size_Mpc_h)),) * 3
    else:
        shape = tuple(int(n) for n in np.broadcast_to(np.asarray(mesh_shape), (3,)))
        if any(n < 2 for n in shape):
            raise ValueError(f"mesh_shape = {shape} must have at least 2 voxels per side")
    if chunk_size < 1:
        raise ValueError(f"chunk_size = {chunk_size} must be >= 1")
    dtype = dtype or jnp.result_type(float)
    cells = np.asarray(shape, dtype=np.float64) / box  # voxels per h⁻¹ Mpc, per axis
    h = header.hubble_param
    # Comoving voxel volume in cm³: (L_i / n_i / h Mpc)³.
    v_cell_cm3 = math.prod(box / n / h * MPC_CM for n in shape)
    mass_g = GADGET_MASS_UNIT_MSUN_H * SOLAR_MASS_G / h  # grams per snapshot mass unit

    total = jnp.zeros((*shape, 3), dtype=dtype)
    names = ("Coordinates", "Masses", "ElectronAbundance", "InternalEnergy")
    n_gas = 0
    for chunk in _iter_type_chunks(header, 0, names, chunk_size):
        coords = chunk["Coordinates"].astype(np.float64)
        n_gas += coords.shape[0]
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"snapshot {path}: 'PartType0/Coordinates' must have shape (n, 3), got {coords.shape}")
        m = chunk["Masses"].astype(np.float64).reshape(-1)
        x_e = chunk["ElectronAbundance"].astype(np.float64).reshape(-1)
        u = chunk["InternalEnergy"].astype(np.float64).reshape(-1)
        for name, v in (("Masses", m), ("ElectronAbundance", x_e), ("InternalEnergy", u)):
            if not np.all(np.isfinite(v)) or np.any(v < 0):
                raise ValueError(f"snapshot {path}: 'PartType0/{name}' must be finite and >= 0")
        # Electrons per voxel volume [cm⁻³] per particle, in float64 before painting:
        # counts (~10⁶⁷) and volumes (~10⁷² cm³) alone overflow float32.
        n_e_per_particle = x_e * X_H * m * (mass_g / PROTON_MASS_G) / v_cell_cm3
        T = np.asarray(temperature_keV(u, x_e, X_H))
        weights = np.stack([n_e_per_particle, m, m * T], axis=-1)
        pos_cell = np.mod(coords * length_unit_Mpc_h, box) * cells[None, :]
        # Pad to a power of two (zero weights at the origin) so few chunk lengths get compiled.
        n_pad = min(chunk_size, 1 << max(3, (coords.shape[0] - 1).bit_length())) - coords.shape[0]
        pos_cell = np.pad(pos_cell, ((0, max(0, n_pad)), (0, 0)))
        weights = np.pad(weights, ((0, max(0, n_pad)), (0, 0)))
        total = total + _paint_jit(jnp.asarray(pos_cell, dtype=dtype), jnp.asarray(weights, dtype=dtype), shape)

    if n_gas == 0:
        raise ValueError(f"snapshot {path}: no gas (PartType0) particles to voxelise")
    n_e = total[..., 0]
    mass, mass_T = total[..., 1], total[..., 2]
    has_gas = mass > 0
    T_keV = jnp.where(has_gas, mass_T / jnp.where(has_gas, mass, jnp.ones((), dtype=dtype)), jnp.zeros((), dtype=dtype))
    return GasFields(n_e_cm3=n_e, T_keV=T_keV)
