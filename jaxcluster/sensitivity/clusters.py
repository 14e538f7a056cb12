r"""Clusters of emulated boxes at one redshift: detection on projected ρ_m/ρ_c, masses and count rates.

Seed 001 §4.2 and §5.3 measure the CR–M relation on clusters detected in
**projected dark-matter density maps** (not in the X-ray maps, so the
sample is not biased toward bright X-ray structures): each box (seed 001:
150 × 150 × 50 h⁻³ Mpc³ at z = 0.21, 16 per θ_sim) is projected along its
last axis, sources are detected where ρ_DM/ρ_c exceeds 200, and mass and
count rate are summed in each detection mask — an approximation of
M_200c that includes line-of-sight contaminants.

**Our reading of the projected threshold.** The column's
$\int ρ_m/ρ_c(z)\,dl$ is divided by seed 001's cell size $ℓ = 0.39$ h⁻¹ Mpc,
$D = \frac{1}{ℓ}\int ρ_m/ρ_c\,dl$ (the sum of the cell values along the line
of sight at seed 001's resolution), and the threshold is $D > 200$; the
mean background is $Ω_m(z) L_∥/ℓ$ ≈ 33 for a 32 h⁻¹ Mpc deep box, and
a halo's mean D within R_200c is $\frac{4}{3}·200\,R_{200c}/ℓ$ ≈ 480 for
R_200c = 0.7 h⁻¹ Mpc, so the isophote D = 200 lies near R_200c. At other
cell sizes D is the same physical column, so the threshold keeps its meaning.

**Pipeline of one box** (`box_clusters`): white noise (the key) → linear
field → 2LPT at `z_init` → FastPM to z → eLDL (n_e, T) → count rates per
voxel (`survey.maps.voxel_count_rates`, EPIC-pn, [0.5–1] + [1–2] keV) →
columns (sums along the last axis) → the JAX detector
(`survey.components.segment_components`) on D with the fixed threshold →
per segment: M = Σ column mass [h⁻¹ M☉] and CR = Σ column count rate
[counts s⁻¹]. With `segmentation` given, detection is skipped and the
clusters are measured in it: M and CR are then smooth in θ_sim, which the
gradients of the fitted relation need.

Masses are physical only as far as the PM resolves halos: at 1 h⁻¹ Mpc
cells (this module's default, for CPU) halos below ~10¹⁴ h⁻¹ M☉ are
under-resolved; seed 001's 0.39 h⁻¹ Mpc is `ScalingBoxConfig(cell_size=0.39,
box_size=(150, 150, 50))` on a GPU.
"""

from __future__ import annotations

from typing import SupportsFloat, SupportsInt


import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..baryons.eldl import ExtendedLDL
from ..baryons.ldl import paint_one_plus_delta
from ..baryons.train import mean_electron_density
from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, E, growth_table
from ..nbody import PMConfig, linear_field, lpt, nbody, white_noise
from ..params import ThetaSim, check_scalar as _check
from ..survey.components import segment_components
from ..survey.maps import voxel_count_rates
from ..xray.emissivity import EmissivityTable

__all__ = ["SEED001_CELL", "ScalingBoxConfig", "BoxClusters", "box_clusters"]

SEED001_CELL = 0.39  # h⁻¹ Mpc: the length ℓ of the projected-density normalisation (module docstring)


class ScalingBoxConfig(eqx.Module):
    """Static settings of the scaling-relation boxes (module docstring).

    Args:
        box_size: (L_x, L_y, L_∥) comoving [h⁻¹ Mpc], projected along the last
            axis; seed 001: (150, 150, 50). Default (64, 64, 32) for CPUs.
        cell_size: particle spacing and mesh cell [h⁻¹ Mpc], (0, 10]; must divide the box.
        z: redshift of the boxes, (0, 3]; seed 001: 0.21.
        z_init: 2LPT redshift, (z, 200].
        n_steps: FastPM steps, [1, 1000].
        threshold: detection threshold on D = ∫ρ_m/ρ_c dl / 0.39 h⁻¹ Mpc, > 0 (200).
        min_area: minimum cells of a detection, ≥ 1.
        max_clusters: cluster slots per box, [1, 65535].
        log10_M_min: mass cut of the fitted sample [log10 h⁻¹ M☉].
        mass_softness: logistic width of the cut [dex], > 0 (a soft cut keeps the fit differentiable).
        log10_pivot: pivot mass of the fit [log10 h⁻¹ M☉].

    Raises:
        ValueError: a value outside its range (named).
    """

    box_size: tuple[float, float, float] = eqx.field(static=True)
    cell_size: float = eqx.field(static=True)
    z: float = eqx.field(static=True)
    z_init: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    min_area: int = eqx.field(static=True)
    max_clusters: int = eqx.field(static=True)
    log10_M_min: float = eqx.field(static=True)
    mass_softness: float = eqx.field(static=True)
    log10_pivot: float = eqx.field(static=True)

    def __init__(
        self,
        box_size: tuple[float, float, float] = (64.0, 64.0, 32.0),
        cell_size: SupportsFloat = 1.0,
        z: SupportsFloat = 0.21,
        z_init: SupportsFloat = 6.0,
        n_steps: SupportsInt = 5,
        threshold: SupportsFloat = 200.0,
        min_area: SupportsInt = 2,
        max_clusters: SupportsInt = 128,
        log10_M_min: SupportsFloat = 13.5,
        mass_softness: SupportsFloat = 0.05,
        log10_pivot: SupportsFloat = 14.0,
    ):
        box = tuple(float(b) for b in box_size)
        if len(box) != 3:
            raise ValueError(f"box_size must have 3 sides, got {box_size!r}")
        self.cell_size = _check("cell_size", cell_size, 0.0, 10.0, low_open=True)
        for b in box:
            _check("box_size", b, self.cell_size, 2000.0)
            if abs(b / self.cell_size - round(b / self.cell_size)) > 1e-6:
                raise ValueError(f"box_size = {box} must be a multiple of cell_size = {self.cell_size}")
        self.box_size = box
        self.z = _check("z", z, 0.0, 3.0, low_open=True)
        self.z_init = _check("z_init", z_init, self.z, 200.0, low_open=True)
        self.n_steps = _check("n_steps", n_steps, 1, 1000, integer=True)
        self.threshold = _check("threshold", threshold, 0.0, 1e9, low_open=True)
        self.min_area = _check("min_area", min_area, 1, 10**6, integer=True)
        self.max_clusters = _check("max_clusters", max_clusters, 1, 65535, integer=True)
        self.log10_M_min = _check("log10_M_min", log10_M_min, 8.0, 17.0)
        self.mass_softness = _check("mass_softness", mass_softness, 0.0, 1.0, low_open=True)
        self.log10_pivot = _check("log10_pivot", log10_pivot, 8.0, 17.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Particles (= mesh cells) per side."""
        return tuple(int(round(b / self.cell_size)) for b in self.box_size)

    def pm_config(self) -> PMConfig:
        return PMConfig(self.box_size, self.shape)


class BoxClusters(eqx.Module):
    """Clusters of one box (or, with leading axes, of many), padded to `max_clusters`.

    Attributes:
        mass: (*b, n) projected mass in the detection mask [h⁻¹ M☉].
        count_rate: (*b, n) CR[0.5–2 keV] in the mask [counts s⁻¹] (EPIC-pn).
        valid: (*b, n) slot holds a detection.
        segmentation: (*b, n_x, n_y) labels 0..n (0 background), brightest D first.
    """

    mass: Float[Array, "*b n"]
    count_rate: Float[Array, "*b n"]
    valid: Bool[Array, "*b n"]
    segmentation: Int[Array, "*b nx ny"]

    def sample_weights(self, config: ScalingBoxConfig) -> Float[Array, "*b n"]:
        """Weights of the fit sample: valid, CR > 0, soft mass cut σ((log10 M − log10 M_min)/s)."""
        ok = self.valid & (self.count_rate > 0) & (self.mass > 0)
        lm = jnp.log10(jnp.where(ok, self.mass, 1.0))
        return jnp.where(ok, jax.nn.sigmoid((lm - config.log10_M_min) / config.mass_softness), 0.0)

    def log10(self) -> tuple[Float[Array, "*b n"], Float[Array, "*b n"]]:
        """(log10 M, log10 CR), 0 in empty slots."""
        ok = self.valid & (self.count_rate > 0) & (self.mass > 0)
        return jnp.log10(jnp.where(ok, self.mass, 1.0)), jnp.log10(jnp.where(ok, self.count_rate, 1.0))


def box_clusters(
    theta: ThetaSim,
    key: PRNGKeyArray,
    config: ScalingBoxConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    segmentation: Int[Array, "nx ny"] | None = None,
) -> BoxClusters:
    """Detect and measure the clusters of one emulated box at `config.z` (module docstring).

    Args:
        theta: θ_sim.
        key: the box's initial conditions.
        config: `ScalingBoxConfig`.
        eldl: baryon painter.
        table: count-rate table (two bands summed).
        segmentation: labels to hold fixed (skip detection), e.g. those at another θ.

    Returns:
        `BoxClusters` of the box.
    """
    cosmo = Cosmology.from_theta(theta)
    growth = growth_table(cosmo)
    pm = config.pm_config()
    dtype = jnp.result_type(float)
    a_init, a = 1.0 / (1.0 + config.z_init), 1.0 / (1.0 + config.z)
    noise = white_noise(key, pm.particle_shape, dtype=dtype)
    pos, p = lpt(linear_field(noise, cosmo, pm), cosmo, growth, pm, a_init, order=2)
    run = nbody(pos, p, cosmo, pm, jnp.linspace(a_init, a, config.n_steps + 1, dtype=dtype), growth=growth)
    pos = run.pos[-1]
    shape, box, cell = pm.mesh_shape, config.box_size, config.cell_size
    with jax.ensure_compile_time_eval():
        n_e_mean = mean_electron_density()
    n_e_rel, T = eldl(pos, theta, config.z, box, shape)
    n_e = n_e_rel.astype(dtype) * jnp.asarray(n_e_mean, dtype)
    cr_vox = voxel_count_rates(table, n_e, T.astype(dtype), jnp.asarray(config.z, dtype), cell**3, cosmo)
    cr_cols = jnp.sum(cr_vox, axis=(2, 3))  # (nx, ny): both bands, summed along the line of sight
    one_plus_delta = paint_one_plus_delta(pos, box, shape)
    om = cosmo.Omega_m.astype(dtype)
    cols = jnp.sum(one_plus_delta, axis=-1)  # Σ_k (1 + δ_k)
    mass_cols = cols * (om * RHO_CRIT0_MSUN_H2_MPC3 * cell**3)
    om_z = om * a**-3 / E(cosmo, jnp.asarray(a, cosmo.Omega_m.dtype)).astype(dtype) ** 2
    detect_map = cols * om_z * (cell / SEED001_CELL)  # D = ∫ ρ_m/ρ_c dl / ℓ
    seg = segmentation
    if seg is None:
        seg = segment_components(jax.lax.stop_gradient(detect_map), config.threshold, config.min_area,
                                 config.max_clusters, 0.005)
    ids = seg.reshape(-1)
    n = config.max_clusters + 1
    mass = jax.ops.segment_sum(mass_cols.reshape(-1), ids, num_segments=n)[1:]
    cr = jax.ops.segment_sum(cr_cols.reshape(-1), ids, num_segments=n)[1:]
    area = jax.ops.segment_sum(jnp.ones(ids.shape, dtype), ids, num_segments=n)[1:]
    return BoxClusters(mass=mass, count_rate=cr, valid=area > 0, segmentation=seg)
