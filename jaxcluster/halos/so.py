r"""Spherical-overdensity halo finder on particles, jit-able with static shapes.

The finder works in four passes, all of fixed size:

1. **Peaks.** Particles are painted (CIC) on a mesh, smoothed with a Gaussian
   and the local maxima of the 3×3×3 neighbourhood above `peak_overdensity`
   become candidates; the `max_halos` highest are kept.
2. **Neighbourhoods.** Particles are sorted into a coarse grid of cells at
   least `r_max` wide; each candidate gathers the particles of the 3×3×3
   block of cells around it (a ragged gather into `capacity` rows), so
   every particle within `r_max` of the peak is in that set, and keeps
   those within `r_max` (at most `max_neighbours`).
3. **Spherical overdensity.** The centre is refined by a shrinking sphere;
   one histogram pass gives the enclosed mass on a fine log grid of radii;
   R_Δ is the *outermost* radius where the mean enclosed density falls to
   Δ ρ_c(z) (mass interpolated linearly in r³ across the shell), for
   200 ρ_c, 500 ρ_c and 200 ρ_m(z).
   $M_Δ = \frac{4}{3}π R_Δ^3 Δ ρ_c(z)$.
4. **Exclusion.** Candidates are ranked by M_200c; one whose centre lies
   inside R_200c of a more massive kept halo is dropped (sub-peaks and
   duplicates).

Units: comoving positions and radii in h⁻¹ Mpc, masses in h⁻¹ M☉,
velocities in km s⁻¹ (peculiar, u = a dx/dt). Overdensities are with
respect to the critical density at the snapshot's redshift, in physical
units: a comoving sphere of radius R has mean physical density
$M / (\frac{4}{3}π (aR)^3)$.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, E, Omega_m_a
from ..nbody.ic import velocity_from_momentum
from ..nbody.mesh import paint_cic, rfft_wavevectors

__all__ = ["SOFinder", "HaloCatalogue", "find_halos", "particle_mass", "critical_density_comoving"]

# Radial shells of the enclosed-mass profile: log-spaced over a factor 200 in
# radius below the search radius (Δln r = 0.02).
_N_RADIAL = 256
_SHRINK_STEPS = 6
_SHRINK_FACTOR = 0.8


class HaloCatalogue(eqx.Module):
    """Halos of one snapshot, padded to a fixed length and sorted by M_200c (largest first).

    Entries with `valid = False` are padding (all their values are zero).

    Attributes:
        pos: (n_halo, 3) centres (shrinking sphere), comoving, wrapped into the box [h⁻¹ Mpc].
        vel: (n_halo, 3) bulk peculiar velocity of the particles within R_200c [km s⁻¹].
        M200c: (n_halo,) mass within R_200c [h⁻¹ M☉].
        R200c: (n_halo,) comoving radius of mean density 200 ρ_c(z) [h⁻¹ Mpc].
        M500c: (n_halo,) mass within R_500c [h⁻¹ M☉].
        R500c: (n_halo,) comoving radius of mean density 500 ρ_c(z) [h⁻¹ Mpc].
        M200m: (n_halo,) mass within R_200m [h⁻¹ M☉].
        R200m: (n_halo,) comoving radius of mean density 200 ρ_m(z) [h⁻¹ Mpc]; the
            least sensitive to the PM force softening, so the one to compare
            with mass functions.
        n200c: (n_halo,) particles within R_200c.
        offset: (n_halo,) distance from the centre to the centre of mass within
            R_200c, in units of R_200c: a dynamical-state proxy (relaxed halos ≲ 0.07).
        infall: (n_halo,) M(< 1.5 R_200c) / M_200c − 1: mass in the infall shell,
            an accretion proxy.
        valid: (n_halo,) whether the entry is a halo.
        n_peaks: number of density peaks above the threshold; more than
            `n_halo` means the smallest candidates were not examined.
    """

    pos: Float[Array, "n_halo 3"]
    vel: Float[Array, "n_halo 3"]
    M200c: Float[Array, " n_halo"]
    R200c: Float[Array, " n_halo"]
    M500c: Float[Array, " n_halo"]
    R500c: Float[Array, " n_halo"]
    M200m: Float[Array, " n_halo"]
    R200m: Float[Array, " n_halo"]
    n200c: Int[Array, " n_halo"]
    offset: Float[Array, " n_halo"]
    infall: Float[Array, " n_halo"]
    valid: Bool[Array, " n_halo"]
    n_peaks: Int[Array, ""]

    @property
    def concentration_proxy(self) -> Float[Array, " n_halo"]:
        """M_500c / M_200c (0.69 for an NFW halo with c_200c = 4; larger is more concentrated)."""
        return jnp.where(self.valid, self.M500c / jnp.where(self.valid, self.M200c, 1.0), 0.0)


class SOFinder(eqx.Module):
    """Settings of the spherical-overdensity finder (all static: they fix shapes).

    Args:
        box_size: comoving box side lengths [h⁻¹ Mpc].
        mesh_shape: mesh on which density peaks are found; its cell should be
            about the PM force resolution (e.g. the PM mesh).
        max_halos: number of candidate peaks examined (the output length).
        capacity: most particles gathered around one peak: those of the 3×3×3
            block of coarse cells that holds it. None lets `find_halos`
            measure it (outside jit only). Under jit an overflow raises an
            error naming this field. At or above the particle count every
            peak simply looks at all particles.
        r_max: largest radius searched [h⁻¹ Mpc, comoving]; halos whose
            R_200c reaches it are dropped. At most a third of the box.
        peak_overdensity: threshold on the smoothed 1 + δ of a candidate peak.
        smoothing: Gaussian smoothing of the peak mesh, in cells.
        min_particles: fewest particles within R_200c for a halo.
        max_neighbours: most particles within r_max of one peak (the rows the
            SO passes run over); more raises an error naming this field.
    """

    box_size: tuple[float, float, float] = eqx.field(static=True)
    mesh_shape: tuple[int, int, int] = eqx.field(static=True)
    max_halos: int = eqx.field(static=True)
    capacity: int | None = eqx.field(static=True)
    r_max: float = eqx.field(static=True)
    peak_overdensity: float = eqx.field(static=True)
    smoothing: float = eqx.field(static=True)
    min_particles: int = eqx.field(static=True)
    max_neighbours: int = eqx.field(static=True)

    def __init__(
        self,
        box_size: float | tuple[float, float, float],
        mesh_shape: int | tuple[int, int, int],
        max_halos: int = 256,
        capacity: int | None = None,
        r_max: float = 2.5,
        peak_overdensity: float = 20.0,
        smoothing: float = 1.0,
        min_particles: int = 20,
        max_neighbours: int = 65536,
    ):
        from ..params import check_scalar as _c, check_triple

        box = check_triple("box_size", box_size, 0.0, math.inf, low_open=True)
        mesh = check_triple("mesh_shape", mesh_shape, 4, 2**10, integer=True)
        max_halos = _c("max_halos", max_halos, 1, 2**20, integer=True)
        capacity = None if capacity is None else _c("capacity", capacity, 1, 2**31 - 1, integer=True)
        r_max = _c("r_max", r_max, 0.0, min(box) / 3, low_open=True)
        peak_overdensity = _c("peak_overdensity", peak_overdensity, 1.0, math.inf, low_open=True)
        smoothing = _c("smoothing", smoothing, 0.0, 1e3)
        min_particles = _c("min_particles", min_particles, 1, 2**31 - 1, integer=True)
        max_neighbours = _c("max_neighbours", max_neighbours, 1, 2**31 - 1, integer=True)
        self.box_size, self.mesh_shape, self.max_halos, self.capacity = box, mesh, int(max_halos), capacity
        self.r_max, self.peak_overdensity = float(r_max), float(peak_overdensity)
        self.smoothing, self.min_particles = float(smoothing), int(min_particles)
        self.max_neighbours = int(max_neighbours)

    @property
    def coarse_shape(self) -> tuple[int, int, int]:
        """Cells of the cell list along each axis (each at least r_max wide)."""
        return tuple(int(b // self.r_max) for b in self.box_size)


def particle_mass(cosmo: Cosmology, box_size: tuple[float, float, float], n_particles: int) -> Float[Array, ""]:
    """Mass of one of `n_particles` equal-mass particles filling the box at the mean matter density [h⁻¹ M☉]."""
    return cosmo.Omega_m * RHO_CRIT0_MSUN_H2_MPC3 * math.prod(box_size) / n_particles


def critical_density_comoving(cosmo: Cosmology, a: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """ρ_c(z) a³: the critical density at a, per comoving volume [h² M☉ Mpc⁻³]."""
    a = jnp.asarray(a, dtype=cosmo.Omega_m.dtype)
    return RHO_CRIT0_MSUN_H2_MPC3 * E(cosmo, a) ** 2 * a**3


# ------------------------------------------------------------------ peaks


def _density_peaks(pos, finder):
    """Top `max_halos` local maxima of the smoothed density: positions (K, 3), mask (K,), count."""
    box = jnp.asarray(finder.box_size, dtype=pos.dtype)
    shape = finder.mesh_shape
    cell = box / jnp.asarray(shape, dtype=pos.dtype)
    counts = paint_cic(pos / cell[None, :], jnp.ones(pos.shape[0], dtype=pos.dtype), shape)
    one_plus_delta = counts * (math.prod(shape) / pos.shape[0])
    if finder.smoothing > 0:
        kx, ky, kz = rfft_wavevectors(shape, dtype=pos.dtype)  # radians per cell
        kernel = jnp.exp(-0.5 * finder.smoothing**2 * (kx**2 + ky**2 + kz**2))
        modes = jnp.fft.rfftn(one_plus_delta)
        one_plus_delta = jnp.fft.irfftn(modes * kernel.astype(modes.dtype), s=shape)
    local_max = one_plus_delta
    for axis in range(3):  # separable 3×3×3 maximum filter
        local_max = jnp.maximum(local_max, jnp.maximum(jnp.roll(local_max, 1, axis), jnp.roll(local_max, -1, axis)))
    is_peak = (one_plus_delta >= local_max) & (one_plus_delta > finder.peak_overdensity)
    heights = jnp.where(is_peak, one_plus_delta, -jnp.inf).ravel()
    k = min(finder.max_halos, heights.size)
    top, idx = jax.lax.top_k(heights, k)
    ijk = jnp.stack(jnp.unravel_index(idx, shape), axis=-1).astype(pos.dtype)
    centres, found = ijk * cell[None, :], jnp.isfinite(top)  # CIC puts a particle's mass at nodes i·cell
    if k < finder.max_halos:
        pad = finder.max_halos - k
        centres = jnp.pad(centres, ((0, pad), (0, 0)))
        found = jnp.pad(found, (0, pad))
    return centres, found, jnp.sum(is_peak).astype(jnp.int32)


# -------------------------------------------------------------- cell list


def _coarse_index(pos, finder):
    box = jnp.asarray(finder.box_size, dtype=pos.dtype)[None, :]
    n_c = jnp.asarray(finder.coarse_shape, dtype=jnp.int32)[None, :]
    ijk = jnp.floor(jnp.mod(pos, box) / box * n_c.astype(pos.dtype)).astype(jnp.int32)
    ijk = jnp.clip(ijk, 0, n_c - 1)  # mod can round up to the box length in float32
    return ijk, (ijk[..., 0] * n_c[0, 1] + ijk[..., 1]) * n_c[0, 2] + ijk[..., 2]


def _block_counts(counts: Array, coarse_shape) -> Array:
    """Particles in the 3×3×3 block of coarse cells around every cell (periodic)."""
    grid = counts.reshape(coarse_shape)
    for axis in range(3):
        grid = grid + jnp.roll(grid, 1, axis) + jnp.roll(grid, -1, axis)
    return grid


def _cell_capacity(pos: np.ndarray, finder: SOFinder) -> int:
    """Most particles in any 3×3×3 block of coarse cells, rounded up to a multiple of 1024."""
    _, flat = _coarse_index(jnp.asarray(pos), finder)
    counts = jnp.bincount(flat, length=math.prod(finder.coarse_shape))
    most = int(jnp.max(_block_counts(counts, finder.coarse_shape)))
    return 1024 * (most // 1024 + 1)


def _cell_list(pos, vel, finder, capacity):
    """Particles sorted by coarse cell, per-cell starts and counts."""
    _, flat = _coarse_index(pos, finder)
    n_cells = math.prod(finder.coarse_shape)
    order = jnp.argsort(flat)
    counts = jnp.bincount(flat, length=n_cells).astype(jnp.int32)
    starts = (jnp.cumsum(counts) - counts).astype(jnp.int32)
    counts = eqx.error_if(
        counts, jnp.max(_block_counts(counts, finder.coarse_shape)) > capacity,
        "SOFinder.capacity is smaller than the most particles in a 3×3×3 block of coarse cells: raise it "
        "(or leave it None and call find_halos outside jit)",
    )
    data = jnp.concatenate([pos, vel], axis=-1)[order]
    return data, starts, counts


def _neighbourhood(centre, data, starts, counts, finder, capacity):
    """Particles of the 27 coarse cells around `centre`, packed into (capacity, 6) [pos | vel] rows and a mask.

    A ragged gather: row j belongs to the neighbour cell c whose cumulative
    count first exceeds j, at offset j − (cumulative count before c).
    """
    n_c = jnp.asarray(finder.coarse_shape, dtype=jnp.int32)
    ijk, _ = _coarse_index(centre[None, :], finder)
    shifts = jnp.stack(jnp.meshgrid(*[jnp.arange(-1, 2, dtype=jnp.int32)] * 3, indexing="ij"), -1).reshape(27, 3)
    nb = jnp.mod(ijk + shifts, n_c[None, :])
    flat = (nb[:, 0] * n_c[1] + nb[:, 1]) * n_c[2] + nb[:, 2]
    n_cell, first = counts[flat], starts[flat]
    cum = jnp.cumsum(n_cell)
    j = jnp.arange(capacity, dtype=jnp.int32)
    c = jnp.minimum(jnp.searchsorted(cum, j, side="right"), 26)
    row = first[c] + j - (cum[c] - n_cell[c])
    mask = j < cum[-1]
    return data[jnp.where(mask, row, 0)], mask


# ------------------------------------------------------ spherical overdensity


def _so_one(centre, data, mask, finder, mass, rho_thr, deltas):
    """SO properties of the halo around one peak (all fixed-size arithmetic)."""
    box = jnp.asarray(finder.box_size, dtype=data.dtype)
    # Offsets from the peak (minimum image), then only the particles within
    # r_max are kept, compacted into `max_neighbours` rows: every later pass
    # runs over those instead of the whole neighbourhood.
    d_all = data[:, :3] - centre[None, :]
    d_all = d_all - box[None, :] * jnp.round(d_all / box[None, :])
    near = mask & (jnp.sum(d_all**2, -1) < finder.r_max**2)
    n_near = jnp.sum(near)
    n_near = eqx.error_if(
        n_near, n_near > finder.max_neighbours,
        "a halo has more particles within r_max than SOFinder.max_neighbours: raise it or lower r_max",
    )
    (rows,) = jnp.nonzero(near, size=finder.max_neighbours, fill_value=data.shape[0])
    inside = rows < data.shape[0]
    rows = jnp.minimum(rows, data.shape[0] - 1)
    mask = inside
    pos, vel = d_all[rows], data[rows, 3:]  # pos relative to the peak

    def offsets(c):
        return pos - c[None, :]

    # Shrinking sphere from two peak-mesh cells.
    cell = min(b / n for b, n in zip(finder.box_size, finder.mesh_shape))

    def shrink(i, c):
        r = 2.0 * cell * _SHRINK_FACTOR**i
        d = offsets(c)
        w = (mask & (jnp.sum(d**2, -1) < r**2)).astype(data.dtype)
        n = jnp.sum(w)
        shift = jnp.sum(w[:, None] * d, 0) / jnp.maximum(n, 1.0)
        return jnp.where(n >= 10, c + shift, c)

    rel = jax.lax.fori_loop(0, _SHRINK_STEPS, shrink, jnp.zeros(3, dtype=data.dtype))
    shift = jnp.sqrt(jnp.sum(rel**2))
    centre = centre + rel
    d = offsets(rel)
    r2 = jnp.where(mask, jnp.sum(d**2, -1), jnp.inf)
    # The kept particles are all those within r_max of the peak, so spheres
    # about the refined centre are complete up to r_max − shift.
    r_complete = finder.r_max - shift

    # Enclosed mass on a fine log grid of radii from one histogram pass.
    log_lo = jnp.log(r_complete) - math.log(200.0)
    dlog = math.log(200.0) / _N_RADIAL
    r2_safe = jnp.where(mask, jnp.maximum(r2, 1e-30), 4.0 * finder.r_max**2)
    shell = jnp.floor((0.5 * jnp.log(r2_safe) - log_lo) / dlog)
    shell = jnp.clip(shell + 1.0, 0.0, _N_RADIAL + 1.0).astype(jnp.int32)  # 0: inside the first edge
    counts = jax.ops.segment_sum(mask.astype(data.dtype), shell, num_segments=_N_RADIAL + 2)
    m_enc = jnp.cumsum(counts)[: _N_RADIAL + 1] * mass  # M(< edge_j)
    u = jnp.exp(3.0 * (log_lo + dlog * jnp.arange(_N_RADIAL + 1, dtype=data.dtype)))  # edge_j³

    def radius(delta):
        k = delta * rho_thr * (4.0 / 3.0 * math.pi)  # SO mass per unit r³
        inside = m_enc >= k * u
        # Outermost edge still inside R_Δ (noise near the centre cannot fake a
        # crossing), then M linear in r³ across the next shell.
        j = jnp.minimum(_N_RADIAL - jnp.argmax(inside[::-1]), _N_RADIAL - 1)
        found = jnp.any(inside) & ~inside[_N_RADIAL]
        slope = (m_enc[j + 1] - m_enc[j]) / (u[j + 1] - u[j])
        u_cross = (m_enc[j] - slope * u[j]) / jnp.maximum(k - slope, 1e-30 * k)
        return jnp.cbrt(jnp.clip(u_cross, u[j], u[j + 1])), found

    (R200, R500, R200m), found = jax.vmap(radius)(deltas)
    in200 = (r2 < R200**2).astype(data.dtype)
    n200 = jnp.sum(in200)
    com = jnp.sum(in200[:, None] * d, 0) / jnp.maximum(n200, 1.0)
    vbulk = jnp.sum(in200[:, None] * vel, 0) / jnp.maximum(n200, 1.0)
    r_infall = jnp.minimum(1.5 * R200, r_complete)
    infall = jnp.sum(r2 < r_infall**2).astype(data.dtype) / jnp.maximum(n200, 1.0) - 1.0
    four_pi_3 = 4.0 / 3.0 * math.pi
    return dict(
        pos=jnp.mod(centre, box),
        vel=vbulk,
        M200c=200.0 * rho_thr * four_pi_3 * R200**3,
        R200c=R200,
        M500c=500.0 * rho_thr * four_pi_3 * R500**3,
        R500c=R500,
        M200m=deltas[2] * rho_thr * four_pi_3 * R200m**3,
        R200m=R200m,
        n200c=n200.astype(jnp.int32),
        offset=jnp.sqrt(jnp.sum(com**2)) / R200,
        infall=infall,
        found=jnp.all(found) & (R200m < 0.95 * r_complete),
    )


def _exclusion(pos, R200, valid, box):
    """Greedy exclusion in descending M_200c order (inputs already sorted)."""
    d = pos[:, None, :] - pos[None, :, :]
    d = d - box[None, None, :] * jnp.round(d / box[None, None, :])
    dist = jnp.sqrt(jnp.sum(d**2, -1))
    inside = dist < R200[None, :]  # [i, j]: i's centre lies inside j's R_200c

    def body(i, kept):
        blocked = jnp.any(kept & inside[i] & (jnp.arange(kept.shape[0], dtype=jnp.int32) < i))
        return kept.at[i].set(valid[i] & ~blocked)

    return jax.lax.fori_loop(0, valid.shape[0], body, jnp.zeros_like(valid))


@eqx.filter_jit
def _find(pos, vel, mass, rho_thr, deltas, finder, capacity):
    centres, has_peak, n_peaks = _density_peaks(pos, finder)
    if capacity >= pos.shape[0]:
        # Small boxes: the neighbourhood would hold more rows than the box has
        # particles, so every peak looks at all of them.
        everything = jnp.concatenate([pos, vel], axis=-1)
        everyone = jnp.ones(pos.shape[0], dtype=bool)

        def one(centre):
            return _so_one(centre, everything, everyone, finder, mass, rho_thr, deltas)

    else:
        data, starts, counts = _cell_list(pos, vel, finder, capacity)

        def one(centre):
            rows, mask = _neighbourhood(centre, data, starts, counts, finder, capacity)
            return _so_one(centre, rows, mask, finder, mass, rho_thr, deltas)

    out = jax.lax.map(one, centres, batch_size=8)
    valid = has_peak & out["found"] & (out["n200c"] >= finder.min_particles)
    order = jnp.argsort(jnp.where(valid, -out["M200c"], jnp.inf))
    out = {k: v[order] for k, v in out.items()}
    valid = valid[order]
    box = jnp.asarray(finder.box_size, dtype=pos.dtype)
    kept = _exclusion(out["pos"], out["R200c"], valid, box)
    order = jnp.argsort(~kept, stable=True)  # kept first, mass order preserved
    kept = kept[order]
    fields = {}
    for name in ("pos", "vel", "M200c", "R200c", "M500c", "R500c", "M200m", "R200m", "n200c", "offset", "infall"):
        v = out[name][order]
        fields[name] = jnp.where(kept.reshape(kept.shape + (1,) * (v.ndim - 1)), v, jnp.zeros_like(v))
    return HaloCatalogue(**fields, valid=kept, n_peaks=n_peaks)


def find_halos(
    pos: Float[Array, "n_ptcl 3"],
    p: Float[Array, "n_ptcl 3"] | None,
    a: float | Float[Array, ""],
    cosmo: Cosmology,
    finder: SOFinder,
    *,
    mass: float | Float[Array, ""] | None = None,
) -> HaloCatalogue:
    """Find spherical-overdensity halos (M_200c, M_500c) in a snapshot.

    Args:
        pos: (n_ptcl, 3) comoving positions [h⁻¹ Mpc] (wrapped or not).
        p: (n_ptcl, 3) momenta p = a³E dx/da [h⁻¹ Mpc] (`nbody` output), or None (zero velocities).
        a: scale factor of the snapshot (sets ρ_c(z) and the velocity conversion).
        cosmo: cosmology.
        finder: finder settings (`SOFinder`).
        mass: particle mass [h⁻¹ M☉]; default the PM value Ω_m ρ_c0 V / n_ptcl.

    Returns:
        A `HaloCatalogue` of length `finder.max_halos`.

    Raises:
        ValueError: bad shapes, or `finder.capacity` is None under jit.
    """
    if pos.ndim != 2 or pos.shape[-1] != 3:
        raise ValueError(f"pos must have shape (n_ptcl, 3), got {pos.shape}")
    if p is not None and p.shape != pos.shape:
        raise ValueError(f"p must have the shape of pos {pos.shape}, got {p.shape}")
    a = jnp.asarray(a, dtype=pos.dtype)
    vel = jnp.zeros_like(pos) if p is None else velocity_from_momentum(p, a)
    if mass is None:
        mass = particle_mass(cosmo, finder.box_size, pos.shape[0])
    mass = jnp.asarray(mass, dtype=pos.dtype)
    capacity = finder.capacity
    if capacity is None:
        if isinstance(pos, jax.core.Tracer):
            raise ValueError("SOFinder.capacity must be set when find_halos is traced (under jit or vmap)")
        capacity = _cell_capacity(np.asarray(pos), finder)
    rho_thr = critical_density_comoving(cosmo, a).astype(pos.dtype)
    om = Omega_m_a(cosmo, a.astype(cosmo.Omega_m.dtype)).astype(pos.dtype)
    deltas = jnp.stack([jnp.asarray(200.0, dtype=pos.dtype), jnp.asarray(500.0, dtype=pos.dtype), 200.0 * om])
    return _find(pos, vel, mass, rho_thr, deltas, finder, capacity)
