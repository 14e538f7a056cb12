r"""Cluster cutouts: Compton-y, X-ray surface brightness, projected gas and dark-matter density around halos.

For each halo centre $\vec c$ and projection axis, a cube of side
`n_pix · pixel_size` (comoving h⁻¹ Mpc) around $\vec c$ is cut from the
periodic box (indices wrap), projected along the axis through a slab of depth
`depth` centred on $\vec c$, and averaged onto `n_pix × n_pix` pixels centred
on $\vec c$ (sub-cell exact: pixels and mesh cells are both regular grids, so
each pixel is the area-weighted mean of the cells it overlaps, with the 1-D
overlaps of `survey.maps.overlap_lengths`). Mesh cell i is centred at
$iΔ$ (the convention of `nbody.paint_cic`), spanning $[(i-\frac12)Δ, (i+\frac12)Δ]$.
A cell cut by a slab face enters with the fraction of it inside the slab.

Channels (`CHANNELS`), each a pixel average:

* ``y``: Compton-y through the slab, $\frac{σ_T}{m_e c^2}\int n_e kT\,dl$
  (physical $n_e$ and $dl$; `survey.maps.compton_y_columns`).
* ``xray_sb``: bolometric bremsstrahlung surface brightness
  $\int l_{\rm bol}\,dl$ [erg s⁻¹ cm⁻²] (seed 002 eq. 6–7), with
  $l_{\rm bol} = 1.4\times10^{-27} g_{ff} T_K^{1/2} n_e Σ_i Z_i^2 n_i$
  [erg s⁻¹ cm⁻³], $g_{ff} = 1.2$ and, for a fully ionised H + He plasma of
  hydrogen mass fraction $X_H = 0.76$, $Σ_i Z_i^2 n_i = 2 n_e / (1 + X_H)$
  (`bremsstrahlung_emissivity`). Physical $n_e = n_{e,\rm com}(1+z)^3$, no
  cosmological dimming (a rest-frame emission measure, as seed 002).
* ``gas``: normalised projected gas density $S_{\rm gas} = \int ρ_{\rm gas}\,dl / \int \bar ρ_{\rm gas}\,dl$
  (seed 002 eq. 3) $= \langle n_e \rangle_{\rm slab} / \bar n_e$ with the
  cosmic mean $\bar n_e$ (`baryons.train.mean_electron_density`).
* ``dm``: normalised projected matter density $S_{\rm DM} = \langle ρ_{\rm DM} \rangle_{\rm slab} / (Ω_m ρ_{c,0})$.

**Normalisation** (seed 002 §3.1): each channel is mapped to [0, 1] with one
global (lo, hi) pair fitted on the training split and applied to every
cutout, so relative intensities between clusters of different mass survive.
Seed 002 does this on the linear values; here `fit_normalisation` does it on
log₁₀ by default (``log=True``), because linear y or X-ray maps put almost
every pixel at 0 (their dynamic range is 10⁴–10⁸); ``log=False`` is the seed's
linear version.

**Splits** by cluster (`split_by_cluster`): every projection of a cluster
lands in the same one of train / validation / test, deterministic in a seed
(seed 002 §3.1).

**Storage**: one HDF5 file (format ``jaxcluster-cutouts`` v1, layout in
`save_cutouts`), written by the resumable chunk writer of
`jaxcluster.io` (`jaxcluster.io.write_chunked`: one chunk file per
box while a build runs, merged at the end; a killed build resumes).
`write_cutout_dataset` builds any set chunk by chunk; `make_cutout_dataset`
a *synthetic* set around the halos of the PM boxes + synthetic gas model
written by `baryons.training_sets.generate_training_set`;
`jaxcluster.fields.detections.make_detection_cutout_dataset` one around the
clusters the survey pipeline detects. `load_cutouts` reads them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..baryons.train import mean_electron_density
from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology
from ..io.snapshots import MPC_CM, X_H
from ..survey.maps import compton_y_columns, overlap_lengths

__all__ = [
    "CHANNELS",
    "CHANNEL_UNITS",
    "CutoutConfig",
    "bremsstrahlung_emissivity",
    "halo_cutouts",
    "CutoutNormalisation",
    "fit_normalisation",
    "normalise",
    "denormalise",
    "SPLITS",
    "split_by_cluster",
    "CutoutSet",
    "save_cutouts",
    "write_cutout_dataset",
    "load_cutouts",
    "make_cutout_dataset",
    "CUTOUT_FORMAT",
]

CHANNELS: tuple[str, ...] = ("y", "xray_sb", "gas", "dm")
CHANNEL_UNITS: dict[str, str] = {
    "y": "dimensionless (Compton-y)",
    "xray_sb": "erg s^-1 cm^-2 (bolometric bremsstrahlung, rest frame)",
    "gas": "dimensionless (projected n_e / cosmic mean)",
    "dm": "dimensionless (projected rho_m / cosmic mean)",
}
SPLITS: tuple[str, ...] = ("train", "val", "test")
CUTOUT_FORMAT = "jaxcluster-cutouts"
_FORMAT_VERSION = 1
_K_B_KEV_PER_K = 8.617333262e-8
_G_FF = 1.2  # mean free-free Gaunt factor (Sarazin 1988)
# Σ Z² n_i / n_e for H + He fully ionised: n_H = X ρ/m_p, n_He = (1−X) ρ/(4 m_p);
# n_e = n_H + 2 n_He, Σ Z² n_i = n_H + 4 n_He → ratio (X + (1−X)) / (X + (1−X)/2) = 2 / (1 + X).
_Z2_PER_ELECTRON = 2.0 / (1.0 + X_H)


class CutoutConfig(eqx.Module):
    """Geometry of the cutouts (static: it fixes shapes).

    Args:
        n_pix: pixels per side (≥ 4).
        pixel_size: comoving pixel side [h⁻¹ Mpc] (> 0).
        depth: comoving depth of the projected slab [h⁻¹ Mpc]; default the
            cutout side `n_pix · pixel_size` (a cube, as seed 002's 12.8 Mpc mesh).
    """

    n_pix: int = eqx.field(static=True)
    pixel_size: float = eqx.field(static=True)
    depth: float = eqx.field(static=True)

    def __init__(self, n_pix: int = 32, pixel_size: float = 0.390625, depth: float | None = None):
        from ..params import check_scalar

        n_pix = check_scalar("n_pix", n_pix, 4, 4096, integer=True)
        pixel_size = check_scalar("pixel_size", pixel_size, 0.0, 1e4, low_open=True)
        depth = n_pix * pixel_size if depth is None else check_scalar("depth", depth, 0.0, 1e5, low_open=True)
        self.n_pix, self.pixel_size, self.depth = int(n_pix), float(pixel_size), depth

    @property
    def side(self) -> float:
        """Cutout side [h⁻¹ Mpc, comoving]."""
        return self.n_pix * self.pixel_size


def bremsstrahlung_emissivity(n_e_cm3: Float[ArrayLike, "*v"], T_keV: Float[ArrayLike, "*v"]) -> Float[Array, "*v"]:
    r"""Bolometric free-free emissivity $l_{\rm bol} = 1.4\times10^{-27} g_{ff} T_K^{1/2} n_e Σ Z_i^2 n_i$ [erg s⁻¹ cm⁻³].

    Seed 002 eq. (6) (Sarazin 1988) with $g_{ff} = 1.2$ and
    $Σ Z_i^2 n_i = 2 n_e / (1 + X_H)$ (H + He fully ionised, $X_H = 0.76$).

    Args:
        n_e_cm3: *physical* electron density [cm⁻³], ≥ 0.
        T_keV: temperature [keV], ≥ 0.
    """
    n_e = jnp.asarray(n_e_cm3)
    T_K = jnp.maximum(jnp.asarray(T_keV, dtype=n_e.dtype), 0.0) / _K_B_KEV_PER_K
    # 1.4e-27 n_e² overflows float32 at n_e² ~ 1e-6: fold the constants first.
    return (1.4e-27 * _G_FF * _Z2_PER_ELECTRON) * jnp.sqrt(T_K) * n_e * n_e


def _gather_cube(field: Float[Array, "nx ny nz"], start: Int[Array, " 3"], m: int) -> Float[Array, "m m m"]:
    """field[(start + arange(m)) mod n] along each axis (periodic box)."""
    n = field.shape
    idx = [jnp.mod(start[a] + jnp.arange(m, dtype=start.dtype), n[a]) for a in range(3)]
    return field[idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :]]


def _one_halo(centre, rho_dm, n_e, T_keV, cell, config, z, h, n_e_mean, rho_mean, axes, m):
    dtype = n_e.dtype
    half = 0.5 * max(config.side, config.depth)
    start = jnp.floor((centre - half) / cell + 0.5).astype(jnp.int32) - 1  # cell holding the lower corner, −1 margin
    # Edges of the gathered cells relative to the centre (unwrapped indices: geometry never wraps).
    edges = ((start[:, None] + jnp.arange(m + 1, dtype=start.dtype)[None, :]).astype(dtype) - 0.5) * cell - centre[:, None]  # (3, m+1)
    pix_edges = (jnp.arange(config.n_pix + 1, dtype=dtype) - 0.5 * config.n_pix) * config.pixel_size
    slab = jnp.asarray([-0.5 * config.depth, 0.5 * config.depth], dtype=dtype)
    cubes = [_gather_cube(f, start, m) for f in (rho_dm, n_e, T_keV)]
    opz = 1.0 + z
    out = []
    for ax in axes:
        u, v = [a for a in range(3) if a != ax]
        w = overlap_lengths(slab, edges[ax])[0] / cell  # (m,) fraction of each cell inside the slab
        A_u = overlap_lengths(pix_edges, edges[u]) / config.pixel_size  # (n_pix, m) pixel-average weights
        A_v = overlap_lengths(pix_edges, edges[v]) / config.pixel_size
        rho, ne, T = (jnp.moveaxis(c, ax, -1) for c in cubes)  # (m_u, m_v, m_los)
        y = compton_y_columns(ne, T, w, z, cell, h)
        sb = jnp.sum(bremsstrahlung_emissivity(ne * opz**3, T) * w[None, None, :], axis=-1) * (cell * MPC_CM / h / opz)
        gas = jnp.sum(ne * w[None, None, :], axis=-1) / (jnp.sum(w) * n_e_mean)
        dm = jnp.sum(rho * w[None, None, :], axis=-1) / (jnp.sum(w) * rho_mean)
        cols = jnp.stack([y, sb, gas, dm])  # (4, m, m)
        out.append(jnp.einsum("pi,qj,cij->cpq", A_u, A_v, cols))
    return jnp.stack(out)


def halo_cutouts(
    centres: Float[ArrayLike, "n_halo 3"],
    rho_dm: Float[ArrayLike, "nx ny nz"],
    n_e_cm3: Float[ArrayLike, "nx ny nz"],
    T_keV: Float[ArrayLike, "nx ny nz"],
    box_size: float | tuple[float, float, float],
    z: float | Float[ArrayLike, ""],
    cosmo: Cosmology,
    config: CutoutConfig = CutoutConfig(),
    axes: tuple[int, ...] = (0, 1, 2),
) -> Float[Array, "n_halo n_axis 4 n_pix n_pix"]:
    """Cutouts of every channel (`CHANNELS`) around each centre, for each projection axis.

    Map pixel (i, j) of the projection along axis a runs along the two other
    axes in increasing order (axis 0 → (y, z), 1 → (x, z), 2 → (x, y)), i
    along the first; pixel edges at $c_u + (i - n_{pix}/2)\\,δ$.

    Args:
        centres: (n_halo, 3) comoving centres [h⁻¹ Mpc] (any periodic image),
            e.g. `HaloCatalogue.pos` of the valid halos.
        rho_dm: (nx, ny, nz) comoving matter density [h² M☉ Mpc⁻³] (CIC of the particles).
        n_e_cm3: (nx, ny, nz) comoving electron density [cm⁻³].
        T_keV: (nx, ny, nz) temperature [keV].
        box_size: comoving box side(s) [h⁻¹ Mpc]: one number for a cube, or (L_x, L_y, L_z)
            for a periodic box with the same cell size L_a / n_a along every axis
            (e.g. a lightcone box, `survey.box_fields`).
        z: redshift of the box.
        cosmo: cosmology (h, Ω_m, Ω_b: the mean densities of the gas and dm channels).
        config: pixel scale, size and slab depth.
        axes: projection axes (any of 0, 1, 2).

    Returns:
        (n_halo, len(axes), 4, n_pix, n_pix) float32 maps in `CHANNEL_UNITS`.

    Raises:
        ValueError: meshes of different shapes or cell sizes, axes outside 0–2,
            or a cutout wider than the box.
    """
    rho_dm, n_e_cm3, T_keV = (np.asarray(f) if not isinstance(f, jax.Array) else f for f in (rho_dm, n_e_cm3, T_keV))
    shape = rho_dm.shape
    if rho_dm.ndim != 3 or n_e_cm3.shape != shape or T_keV.shape != shape:
        raise ValueError(f"rho_dm, n_e_cm3, T_keV must share one (nx, ny, nz) shape; got "
                         f"{rho_dm.shape}, {n_e_cm3.shape}, {T_keV.shape}")
    boxes = (float(box_size),) * 3 if np.ndim(box_size) == 0 else tuple(float(b) for b in box_size)
    if len(boxes) != 3 or min(boxes) <= 0:
        raise ValueError(f"box_size = {box_size} must be > 0: one side or three [h^-1 Mpc]")
    cells = [b / n for b, n in zip(boxes, shape)]
    if max(cells) - min(cells) > 1e-6 * max(cells):
        raise ValueError(f"box_size {boxes} and mesh {shape} give different cell sizes {cells}; one cell size is needed")
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"axes {axes} must be a non-empty subset of (0, 1, 2)")
    if max(config.side, config.depth) > min(boxes):
        raise ValueError(f"cutout side {config.side} / depth {config.depth} must be <= box_size = {min(boxes)} [h^-1 Mpc]")
    centres = jnp.asarray(centres, dtype=jnp.float32)
    if centres.ndim != 2 or centres.shape[1] != 3:
        raise ValueError(f"centres must have shape (n_halo, 3), got {centres.shape}")
    f32 = [jnp.asarray(f, dtype=jnp.float32) for f in (rho_dm, n_e_cm3, T_keV)]
    cell = cells[0]
    m = math.ceil(max(config.side, config.depth) / cell) + 3
    means = jnp.asarray([mean_electron_density(cosmo), float(cosmo.Omega_m) * RHO_CRIT0_MSUN_H2_MPC3], jnp.float32)
    zh = jnp.asarray([float(z), float(cosmo.h)], jnp.float32)
    return _cutouts(jnp.mod(centres, jnp.asarray(boxes, jnp.float32)[None, :]), *f32, zh, means, float(cell), config,
                    tuple(axes), m)


@eqx.filter_jit  # arrays traced; geometry (cell, config, axes, m) static: one compile per geometry
def _cutouts(centres, rho, ne, T, zh, means, cell, config, axes, m):
    def one(c):
        return _one_halo(c, rho, ne, T, cell, config, zh[0], zh[1], means[0], means[1], axes, m)

    return jax.vmap(one)(centres)


class CutoutNormalisation(eqx.Module):
    """Global per-channel map to [0, 1] (seed 002 §3.1): $t = (f(x) - lo) / (hi - lo)$.

    $f(x) = \\log_{10}\\max(x, \\text{floor})$ where `log`, else $f(x) = x$.

    Attributes:
        lo, hi: (n_channel,) bounds of f over the fitting set.
        floor: (n_channel,) smallest value kept before the log (unused if linear).
        log: per-channel log₁₀ switch.
    """

    lo: Float[Array, " c"]
    hi: Float[Array, " c"]
    floor: Float[Array, " c"]
    log: tuple[bool, ...] = eqx.field(static=True)

    def __check_init__(self):
        if not (self.lo.shape == self.hi.shape == self.floor.shape == (len(self.log),)):
            raise ValueError(f"lo, hi, floor must have shape ({len(self.log)},), got {self.lo.shape}, {self.hi.shape}, {self.floor.shape}")


def _forward(maps, norm):
    shape = (1,) * (maps.ndim - 3) + (-1, 1, 1)
    logs = jnp.asarray(norm.log).reshape(shape)
    floor = jnp.asarray(norm.floor, maps.dtype).reshape(shape)
    return jnp.where(logs, jnp.log10(jnp.maximum(maps, floor)), maps)


def fit_normalisation(
    maps: Float[ArrayLike, "*b c n_pix n_pix"], log: bool | tuple[bool, ...] = True, dynamic_range: float = 1e8
) -> CutoutNormalisation:
    """Fit the global bounds on a set of cutouts (the training split).

    Args:
        maps: (..., n_channel, n_pix, n_pix) cutouts (channel axis third from last).
        log: log₁₀ before the min–max, one flag or one per channel (seed 002: False).
        dynamic_range: floor = max / dynamic_range for log channels (zeros and
            the faint outskirts are clipped there).

    Returns:
        `CutoutNormalisation`.
    """
    maps = jnp.asarray(maps, dtype=jnp.float32)
    c = maps.shape[-3]
    logs = (bool(log),) * c if isinstance(log, bool) else tuple(bool(v) for v in log)
    if len(logs) != c:
        raise ValueError(f"log has {len(logs)} flags for {c} channels")
    if not dynamic_range > 1:
        raise ValueError(f"dynamic_range = {dynamic_range} must be > 1")
    return _fit(maps, logs, float(dynamic_range))


@eqx.filter_jit
def _fit(maps, logs, dynamic_range):
    c = maps.shape[-3]
    per_channel = jnp.moveaxis(maps, -3, 0).reshape(c, -1)
    top = jnp.max(per_channel, axis=1)
    floor = jnp.where(top > 0, top / dynamic_range, 1e-30)
    probe = CutoutNormalisation(lo=jnp.zeros(c, maps.dtype), hi=jnp.ones(c, maps.dtype), floor=floor, log=logs)
    t = jnp.moveaxis(_forward(maps, probe), -3, 0).reshape(c, -1)
    return CutoutNormalisation(lo=jnp.min(t, axis=1), hi=jnp.max(t, axis=1), floor=floor, log=logs)


@eqx.filter_jit
def normalise(maps: Float[ArrayLike, "*b c n_pix n_pix"], norm: CutoutNormalisation) -> Float[Array, "*b c n_pix n_pix"]:
    """Cutouts → [0, 1] with the global bounds (values outside the fitting set's range leave [0, 1])."""
    maps = jnp.asarray(maps, dtype=jnp.float32)
    shape = (1,) * (maps.ndim - 3) + (-1, 1, 1)
    lo, hi = norm.lo.reshape(shape), norm.hi.reshape(shape)
    return (_forward(maps, norm) - lo) / jnp.where(hi > lo, hi - lo, 1.0)


@eqx.filter_jit
def denormalise(t: Float[ArrayLike, "*b c n_pix n_pix"], norm: CutoutNormalisation) -> Float[Array, "*b c n_pix n_pix"]:
    """Inverse of `normalise` (values below a log channel's floor come back as the floor)."""
    t = jnp.asarray(t, dtype=jnp.float32)
    shape = (1,) * (t.ndim - 3) + (-1, 1, 1)
    lo, hi = norm.lo.reshape(shape), norm.hi.reshape(shape)
    f = lo + t * jnp.where(hi > lo, hi - lo, 1.0)
    return jnp.where(jnp.asarray(norm.log).reshape(shape), 10.0**f, f)


def split_by_cluster(
    cluster_id: Int[ArrayLike, " n"], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> np.ndarray:
    """Assign each cutout to train (0), val (1) or test (2) so all cutouts of one cluster share a split.

    The distinct ids are shuffled with `numpy.random.default_rng(seed)` and
    cut at the cumulative fractions (rounded to whole clusters), so the
    assignment depends only on the set of ids and the seed, not on their order.

    Args:
        cluster_id: (n,) integer cluster id of each cutout (repeats for its projections).
        fractions: (train, val, test) fractions of the clusters, ≥ 0, summing to 1.
        seed: shuffle seed.

    Returns:
        (n,) int8 split codes (index into `SPLITS`).
    """
    ids = np.asarray(cluster_id)
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions {fractions} must be three numbers >= 0 summing to 1")
    uniq = np.unique(ids)
    order = np.random.default_rng(seed).permutation(uniq.size)
    cuts = np.round(np.cumsum(fr)[:2] * uniq.size).astype(int)
    code_of = np.empty(uniq.size, dtype=np.int8)
    code_of[order[: cuts[0]]] = 0
    code_of[order[cuts[0]: cuts[1]]] = 1
    code_of[order[cuts[1]:]] = 2
    return code_of[np.searchsorted(uniq, ids)]


@dataclasses.dataclass(frozen=True)
class CutoutSet:
    """Cutouts read by `load_cutouts` (numpy arrays; index i is one cluster projection).

    Attributes:
        maps: (n, 4, n_pix, n_pix) float32 physical maps, channels `channels`.
        channels: channel names (`CHANNELS`).
        cluster_id: (n,) int64 cluster id (same for the projections of one halo).
        axis: (n,) int8 projection axis.
        split: (n,) int8 split code (`SPLITS`).
        halo: dict of (n,) / (n, 3) halo properties (M200c, R200c, M500c, R500c
            [h⁻¹ M☉, comoving h⁻¹ Mpc], pos, z, sample).
        normalisation: the global normalisation stored with the set.
        pixel_size, depth: [h⁻¹ Mpc, comoving].
        metadata: JSON metadata (``synthetic`` says whether it is synthetic).
    """

    maps: np.ndarray
    channels: tuple[str, ...]
    cluster_id: np.ndarray
    axis: np.ndarray
    split: np.ndarray
    halo: dict[str, np.ndarray]
    normalisation: CutoutNormalisation
    pixel_size: float
    depth: float
    metadata: dict[str, Any]

    def select(self, split: str) -> np.ndarray:
        """Indices of one split ('train', 'val' or 'test')."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def normalised(self, split: str | None = None) -> np.ndarray:
        """(n, 4, n_pix, n_pix) maps in [0, 1] (one split, or all)."""
        idx = slice(None) if split is None else self.select(split)
        return np.asarray(normalise(self.maps[idx], self.normalisation))


def _cutout_settings(channels, pixel_size, depth, metadata, extra: dict | None = None) -> dict:
    return {"format": CUTOUT_FORMAT, "format_version": _FORMAT_VERSION, "channels": list(channels),
            "pixel_size_Mpc_h": float(pixel_size), "depth_Mpc_h": float(depth), "metadata": metadata or {}} | (extra or {})


def _write_normalisation(f, normalisation: CutoutNormalisation) -> None:
    g = f.create_group("normalisation")
    for k in ("lo", "hi", "floor"):
        g.create_dataset(k, data=np.asarray(getattr(normalisation, k), np.float32))
    g.attrs["log"] = np.asarray(normalisation.log, dtype=bool)


def _finish_cutout_file(f, channels, metadata) -> None:
    """Attributes of the ``jaxcluster-cutouts`` layout that the chunk merge does not write."""
    f.attrs["metadata_json"] = json.dumps(metadata or {})
    f["maps"].attrs["units_json"] = json.dumps({c: CHANNEL_UNITS.get(c, "") for c in channels})


def save_cutouts(
    path: str | os.PathLike,
    maps: Float[ArrayLike, "n c n_pix n_pix"],
    *,
    cluster_id: Int[ArrayLike, " n"],
    axis: Int[ArrayLike, " n"],
    split: Int[ArrayLike, " n"],
    halo: dict[str, ArrayLike],
    normalisation: CutoutNormalisation,
    pixel_size: float,
    depth: float,
    channels: tuple[str, ...] = CHANNELS,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write cutouts held in memory to one HDF5 file (overwriting `path`), through the dataset writer.

    The file is written by `jaxcluster.io.write_chunked` as
    one chunk (so never half a file: chunk, merge and rename), the same
    writer the chunked builders (`write_cutout_dataset`) use.

    Layout (format ``jaxcluster-cutouts``, version 1)::

        /                attrs: format, format_version, channels, pixel_size_Mpc_h, depth_Mpc_h, metadata_json
                         (and the builder's settings, compared on resume)
        /maps            (n, c, n_pix, n_pix) float32, chunked one cutout per chunk; attr units_json
        /cluster_id      (n,) int64      /axis (n,) int8      /split (n,) int8 (0 train, 1 val, 2 test)
        /halo/<name>     (n, ...) halo or detection properties (M200c, R200c, pos, z, ...)
        /normalisation   lo, hi, floor (c,); attr log (c,)
    """
    from ..io.campaign import write_chunked

    maps = np.asarray(maps, dtype=np.float32)
    n = maps.shape[0]
    if maps.ndim != 4 or maps.shape[1] != len(channels):
        raise ValueError(f"maps must have shape (n, {len(channels)}, n_pix, n_pix), got {maps.shape}")
    cols = {"cluster_id": np.asarray(cluster_id, np.int64), "axis": np.asarray(axis, np.int8),
            "split": np.asarray(split, np.int8)}
    for k, v in cols.items():
        if v.shape != (n,):
            raise ValueError(f"{k} must have shape ({n},), got {v.shape}")
    arrays = {"maps": maps, **cols}
    for k, v in halo.items():
        v = np.asarray(v)
        if v.shape[:1] != (n,):
            raise ValueError(f"halo[{k!r}] must have leading length {n}, got {v.shape}")
        arrays[f"halo/{k}"] = v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    parts = path.with_name(path.name + ".parts")
    if parts.exists():  # a save killed in the middle: its chunk is not these arrays
        import shutil

        shutil.rmtree(parts)

    def finalize(f):
        _write_normalisation(f, normalisation)
        _finish_cutout_file(f, channels, metadata)

    write_chunked(path, _cutout_settings(channels, pixel_size, depth, metadata), 1, lambda c: arrays,
                  finalize=finalize, merge_chunk_rows=1)


def write_cutout_dataset(
    out_path: str | os.PathLike,
    n_chunks: int,
    make_chunk: Any,
    *,
    pixel_size: float,
    depth: float,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    log: bool | tuple[bool, ...] = True,
    settings: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    channels: tuple[str, ...] = CHANNELS,
    progress: bool = False,
) -> CutoutSet:
    """Build a cutout set chunk by chunk with the resumable chunked writer of `jaxcluster.io`, then split and normalise.

    Chunk c (a box, a lightcone box, ...) is ``make_chunk(c)``: a dict of
    ``maps`` (k, c, n_pix, n_pix), ``cluster_id`` (k,) (unique across chunks;
    repeated for the projections of one cluster), ``axis`` (k,) and any
    ``halo/<name>`` (k, ...) arrays. Chunks go to ``out_path.parts/`` and are
    merged when all are present (`jaxcluster.io.write_chunked`):
    a killed build rerun with the same arguments computes only the missing
    chunks. On the merged set the splits are drawn by cluster
    (`split_by_cluster`: all projections of a cluster in one split) and the
    global normalisation is fitted on the training split (`fit_normalisation`),
    both before the file is renamed into place.

    Args:
        out_path: the HDF5 file (``jaxcluster-cutouts`` layout, `save_cutouts`).
        n_chunks: number of chunks.
        make_chunk: chunk index → dict of arrays (deterministic in the index).
        pixel_size: cutout pixel [h⁻¹ Mpc, comoving], stored.
        depth: cutout slab depth [h⁻¹ Mpc, comoving], stored.
        fractions: (train, val, test) cluster fractions.
        seed: split seed.
        log: log₁₀ normalisation per channel.
        settings: what makes the chunks (compared on resume; JSON, no nested dicts).
        metadata: JSON description stored with the set (``synthetic`` …).
        channels: channel names.
        progress: tqdm bar over chunks.

    Returns:
        The set as `load_cutouts` reads it.

    Raises:
        ValueError: no cutout in any chunk, an empty training split, or a partial
            build at `out_path` made with other settings.
    """
    from ..io.campaign import write_chunked

    logs = [bool(log)] * len(channels) if isinstance(log, bool) else [bool(v) for v in log]
    extra = {"fractions": [float(f) for f in fractions], "split_seed": int(seed), "log": logs} | (settings or {})

    def finalize(f):
        ids = f["cluster_id"][()]
        if ids.size == 0:
            raise ValueError(f"no cutout in any of the {n_chunks} chunks")
        split = split_by_cluster(ids, fractions, seed)
        f.create_dataset("split", data=split)
        train = np.flatnonzero(split == 0)
        if train.size == 0:
            raise ValueError(f"the training split is empty ({np.unique(ids).size} clusters, fractions {fractions})")
        _write_normalisation(f, fit_normalisation(f["maps"][train], log=tuple(logs)))
        _finish_cutout_file(f, channels, metadata)

    write_chunked(out_path, _cutout_settings(channels, pixel_size, depth, metadata, extra), n_chunks, make_chunk,
                  finalize=finalize, merge_chunk_rows=1, progress=progress, unit="chunk")
    return load_cutouts(out_path)


def load_cutouts(path: str | os.PathLike) -> CutoutSet:
    """Read a file written by `save_cutouts`.

    Raises:
        ValueError: not a ``jaxcluster-cutouts`` file, a newer version, or arrays that do not match
            (shapes, dtypes, non-finite maps, split codes, channels, normalisation); the message names
            the file and the problem.
    """
    from ..io.checks import LoadError, check_array, open_hdf5

    with open_hdf5(path, "cutout file") as f:
        if f.attrs.get("format") != CUTOUT_FORMAT:
            raise LoadError(f"{path} is not a {CUTOUT_FORMAT} file")
        if int(f.attrs["format_version"]) > _FORMAT_VERSION:
            raise LoadError(f"{path}: format_version {f.attrs['format_version']} is newer than {_FORMAT_VERSION}")
        for name in ("maps", "cluster_id", "axis", "split", "normalisation/lo", "normalisation/hi",
                     "normalisation/floor"):
            if name not in f:
                raise LoadError(f"{path}: {name!r} is missing")
        for name in ("channels", "pixel_size_Mpc_h", "depth_Mpc_h", "metadata_json"):
            if name not in f.attrs:
                raise LoadError(f"{path}: attribute {name!r} is missing")
        channels = tuple(str(c) for c in f.attrs["channels"])
        maps = f["maps"][()]
        check_array(path, "maps", maps, ndim=4)
        n, c = maps.shape[:2]
        if c != len(channels):
            raise LoadError(f"{path}: 'maps' has {c} channels but the channels attribute lists {channels}")
        cols = {k: f[k][()] for k in ("cluster_id", "axis", "split")}
        for k, v in cols.items():
            check_array(path, k, v, kind="iu", shape=(n,))
        if n and not np.isin(cols["split"], np.arange(len(SPLITS))).all():
            raise LoadError(f"{path}: 'split' holds codes other than {tuple(range(len(SPLITS)))} ({SPLITS})")
        if n and not np.isin(cols["axis"], (0, 1, 2)).all():
            raise LoadError(f"{path}: 'axis' holds values other than 0, 1, 2")
        g = f["normalisation"]
        norm_arrays = {k: g[k][()] for k in ("lo", "hi", "floor")}
        for k, v in norm_arrays.items():
            check_array(path, f"normalisation/{k}", v, shape=(c,))
        log = tuple(bool(v) for v in g.attrs["log"]) if "log" in g.attrs else ()
        if len(log) != c:
            raise LoadError(f"{path}: normalisation/log has {len(log)} flags for {c} channels")
        halo = {k: v[()] for k, v in f["halo"].items()} if "halo" in f else {}
        for k, v in halo.items():
            if np.shape(v)[:1] != (n,):
                raise LoadError(f"{path}: 'halo/{k}' has shape {np.shape(v)}, expected leading length {n}")
        pixel_size, depth = float(f.attrs["pixel_size_Mpc_h"]), float(f.attrs["depth_Mpc_h"])
        if not (0 < pixel_size < np.inf and 0 < depth < np.inf):
            raise LoadError(f"{path}: pixel_size_Mpc_h = {pixel_size}, depth_Mpc_h = {depth} must be finite and > 0")
        try:
            metadata = json.loads(f.attrs["metadata_json"])
        except (json.JSONDecodeError, TypeError) as err:
            raise LoadError(f"{path}: attribute 'metadata_json' is not JSON ({err})") from None
        norm = CutoutNormalisation(lo=jnp.asarray(norm_arrays["lo"]), hi=jnp.asarray(norm_arrays["hi"]),
                                   floor=jnp.asarray(norm_arrays["floor"]), log=log)
        return CutoutSet(maps=maps, channels=channels, halo=halo, normalisation=norm, pixel_size=pixel_size,
                         depth=depth, metadata=metadata, **cols)


def make_cutout_dataset(
    out_path: str | os.PathLike,
    data_dirs: list[str | os.PathLike],
    *,
    z: float = 0.1,
    config: CutoutConfig = CutoutConfig(),
    min_mass: float = 1e13,
    max_boxes: int | None = None,
    axes: tuple[int, ...] = (0, 1, 2),
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    log: bool | tuple[bool, ...] = True,
    progress: bool = False,
) -> CutoutSet:
    """Build a **synthetic** cutout dataset from training-set boxes (PM dark matter + synthetic gas).

    Reads ``<data_dir>/<sample>/z<z:.3f>.h5`` (written by
    `baryons.training_sets.generate_training_set`: fields ``rho_dm``,
    ``n_e_cm3``, ``T_keV`` and the halo catalogue), cuts every valid halo with
    M_200c ≥ `min_mass` along each of `axes`, splits by cluster, fits the
    normalisation on the training split, one chunk per box through
    `write_cutout_dataset` (a killed build resumes at the first missing box).
    One redshift per box, so a cluster id is one physical halo.

    Example (the set made for the mass-map networks)::

        from jaxcluster.fields import CutoutConfig, make_cutout_dataset, load_cutouts
        make_cutout_dataset("/work/synth2/cutouts/cutouts_z0.1_32px.h5",
                            ["/work/synth2/cv", "/work/synth2/lh"], z=0.1,
                            config=CutoutConfig(n_pix=32, pixel_size=0.390625))
        s = load_cutouts("/work/synth2/cutouts/cutouts_z0.1_32px.h5")
        x = s.normalised("train")          # (n, 4, 32, 32) in [0, 1]: y, xray_sb, gas, dm
        inputs, target = x[:, :2], x[:, 3:]  # (SZ, X-ray) → projected DM

    Args:
        out_path: HDF5 file to write.
        data_dirs: training-set directories (CV-like, LH-like, ...).
        z: redshift of the boxes used (files ``z{z:.3f}.h5``).
        config: cutout geometry.
        min_mass: smallest M_200c [h⁻¹ M☉].
        max_boxes: most boxes read per directory (None: all).
        axes: projection axes.
        fractions: (train, val, test) cluster fractions.
        seed: split seed.
        log: log₁₀ normalisation per channel (`fit_normalisation`).
        progress: tqdm bar over boxes.

    Returns:
        The written set, as `load_cutouts` reads it (an existing finished file made
        with the same arguments is read, not rebuilt).

    Raises:
        ValueError: no box file at `z`, or no halo above `min_mass`.
    """
    from ..baryons.training_sets import stored_halos
    from ..io.runs import load_run

    files = []
    for d in data_dirs:
        found = sorted(Path(d).glob(f"*/z{z:.3f}.h5"), key=lambda p: (len(p.parent.name), p.parent.name))
        files += found[:max_boxes] if max_boxes is not None else found
    if not files:
        raise ValueError(f"no z{z:.3f}.h5 box files under {data_dirs}")
    names = [f"{p.parent.parent.name}/{p.parent.name}" for p in files]

    def make_chunk(b: int) -> dict[str, np.ndarray]:
        run = load_run(files[b])
        halos = stored_halos(run.fields)
        keep = np.flatnonzero(np.asarray(halos.valid) & (np.asarray(halos.M200c) >= min_mass))
        k = keep.size * len(axes)
        if keep.size:
            cosmo = Cosmology.from_theta(run.theta)
            cut = np.asarray(halo_cutouts(np.asarray(halos.pos)[keep], run.fields["rho_dm"], run.fields["n_e_cm3"],
                                          run.fields["T_keV"], tuple(run.config.box_size), run.z, cosmo, config, axes))
            maps = cut.reshape((-1,) + cut.shape[2:])
        else:
            maps = np.zeros((0, len(CHANNELS), config.n_pix, config.n_pix), np.float32)
        out = {"maps": maps, "cluster_id": np.repeat(b * 100000 + keep, len(axes)).astype(np.int64),  # one id per (box, halo)
               "axis": np.tile(np.asarray(axes, np.int8), keep.size)}
        for name in ("M200c", "R200c", "M500c", "R500c", "pos"):
            out[f"halo/{name}"] = np.repeat(np.asarray(getattr(halos, name))[keep], len(axes), axis=0)
        out["halo/z"] = np.full(k, run.z, np.float32)
        out["halo/box"] = np.full(k, b, np.int32)
        return out

    try:
        return write_cutout_dataset(
            out_path, len(files), make_chunk, pixel_size=config.pixel_size, depth=config.depth, fractions=fractions,
            seed=seed, log=log, progress=progress,
            settings={"files": [str(f) for f in files], "z": float(z), "n_pix": config.n_pix, "min_mass": float(min_mass),
                      "axes": [int(a) for a in axes]},
            metadata={"synthetic": True, "generator": "jaxcluster.fields.cutouts.make_cutout_dataset",
                      "z": z, "n_pix": config.n_pix, "min_mass": min_mass, "fractions": list(fractions), "seed": seed,
                      "boxes": names, "cluster_id": "box index * 100000 + halo index (halo/box gives the box)"},
        )
    except ValueError as err:
        if "no cutout" in str(err):
            raise ValueError(f"no halo with M200c >= {min_mass:.3g} h^-1 Msun in {len(files)} boxes") from err
        raise
