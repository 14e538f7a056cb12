r"""The survey forward model: θ_sim and a key in, maps, catalogues and the XOD out (seed 001 §2.3).

For each lightcone and each of its boxes (`lightcone`): white noise from
the box's own key → linear field → 2LPT at `z_init` → FastPM to the box
redshift (`n_steps` steps linear in a) → the eLDL paints n_e and T → count
rates in both bands, Compton-y and the matter density, projected and
resampled onto the angular pixels (`maps`) → detection on the [0.5–2] keV
map (`detect`, sep or the JAX detector) → count rates summed in the
segments (`detect.measure_sources`) → the XOD over all boxes and lightcones
(`xod`). Boxes run one after another (`lax.map`), so memory holds one box.

`simulate_xod` and `simulate_survey` are pure functions of (θ_sim, key):
`jit` them, `vmap` them over θ_sim and keys, differentiate the soft XOD
(segmentation held fixed) with respect to θ_sim; `simulate_xod_batch`
spreads a batch of (θ_sim, key) over devices.
"""

from __future__ import annotations

from typing import SupportsFloat, SupportsInt


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, Int, Key, PRNGKeyArray

from ..analytic.counts import XODBinning
from ..baryons.eldl import ExtendedLDL
from ..baryons.ldl import paint_one_plus_delta
from ..baryons.train import mean_electron_density
from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, GrowthTable, growth_table
from ..nbody import linear_field, lpt, nbody, white_noise
from ..nbody.sharding import device_mesh
from ..params import PRIOR_BOUNDS, ThetaSim, check_scalar as _check
from ..xray.emissivity import EmissivityTable, default_emissivity_table
from .detect import Catalogue, DetectionConfig, measure_sources, segment
from .lightcone import BoxLayout, LightconeGeometry, box_layout
from .maps import BoxMaps, box_maps
from .xod import hard_xod, soft_xod

__all__ = ["SurveyConfig", "SurveyResult", "simulate_box", "box_particles", "box_fields", "box_keys", "survey_xods", "simulate_survey", "simulate_xod", "simulate_xod_batch", "seed001_survey", "lightcone_to_z1", "detect_and_measure"]


class SurveyConfig(eqx.Module):
    """Everything static about a simulated survey; validated at construction.

    Args:
        area_deg2: area of one lightcone [deg²] (a square field); (0, 400].
        z_min: near edge of the lightcones, [0.01, z_max).
        z_max: far edge, (z_min, 3].
        n_boxes: boxes per lightcone, [1, 64].
        cell_size: voxel side [h⁻¹ Mpc], (0, 50]; 0.39 (seed 001) by default.
        pixel_arcmin: map pixel [arcmin], (0, 60].
        omega_m_min: smallest Ω_m the padded boxes must hold (`LightconeGeometry`).
        omega_m_max: largest Ω_m admitted.
        n_lightcones: independent lightcones in the survey, [1, 1000]; the
            XOD sums them (seed 001: 10 × 20 deg²).
        z_init: redshift of the 2LPT initial conditions, (z_max, 200].
            Default 6, as the eLDL's training sets.
        n_steps: FastPM steps from z_init to each box's redshift, [1, 1000].
        mesh_factor: force-mesh refinement over the particle grid, [1, 4].
        detector: "sep" or "jax" (`DetectionConfig.method`).
        threshold: detection threshold [counts s⁻¹ arcmin⁻²] in [0.5–2] keV.
        min_area: minimum detection area [pixels].
        deblend_nthresh: sep deblending levels.
        deblend_cont: sep deblending contrast.
        max_sources: sources kept per box map.
        cr_min: CR[0.5–2] cut [counts s⁻¹], > 0 (seed 001: 0.02).
        cr_edges: XOD CR bin edges [counts s⁻¹] (default `XODBinning`'s).
        hr_edges: XOD HR bin edges.
        z_edges: XOD z bin edges (default: 4 equal bins over [z_min, z_max]).
        softness: soft-XOD logistic scale in log10 CR and log10 HR [dex], (0, 1].
        softness_z: soft-XOD logistic scale in z, (0, 1].
        isophote_softness: if set, the soft XOD measures sources in soft
            isophotes of this logistic scale in log10 of the pixel count rate
            [dex], (0, 1], so its derivatives include the growth of the
            sources' isophotes (`survey.detect`, soft isophotes); None (default):
            the hard masks.
        perp_multiple: transverse cells rounded up to a multiple of this
            (`LightconeGeometry`; a box decomposed over P devices needs P).

    Raises:
        ValueError: a value outside its range; the message names the parameter and the range.
    """

    geometry: LightconeGeometry
    detection: DetectionConfig
    binning: XODBinning
    n_lightcones: int = eqx.field(static=True)
    z_init: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    mesh_factor: int = eqx.field(static=True)
    cr_min: float = eqx.field(static=True)
    softness: float = eqx.field(static=True)
    softness_z: float = eqx.field(static=True)
    isophote_softness: float | None = eqx.field(static=True)

    def __init__(
        self,
        area_deg2: SupportsFloat = 20.0,
        z_min: SupportsFloat = 0.1,
        z_max: SupportsFloat = 0.5,
        n_boxes: SupportsInt = 12,
        cell_size: SupportsFloat = 0.39,
        pixel_arcmin: SupportsFloat = 1.0,
        omega_m_min: SupportsFloat = PRIOR_BOUNDS["Omega_m"][0],
        omega_m_max: SupportsFloat = PRIOR_BOUNDS["Omega_m"][1],
        n_lightcones: SupportsInt = 1,
        z_init: SupportsFloat = 6.0,
        n_steps: SupportsInt = 10,
        mesh_factor: SupportsInt = 1,
        detector: str = "sep",
        threshold: SupportsFloat = 1e-4,
        min_area: SupportsInt = 3,
        deblend_nthresh: SupportsInt = 32,
        deblend_cont: SupportsFloat = 0.005,
        max_sources: SupportsInt = 256,
        cr_min: SupportsFloat = 0.02,
        cr_edges: ArrayLike | None = None,
        hr_edges: ArrayLike | None = None,
        z_edges: ArrayLike | None = None,
        softness: SupportsFloat = 0.02,
        softness_z: SupportsFloat = 0.005,
        isophote_softness: SupportsFloat | None = None,
        perp_multiple: SupportsInt = 1,
    ):
        self.geometry = LightconeGeometry(area_deg2, z_min, z_max, n_boxes, cell_size, pixel_arcmin,
                                          omega_m_min, omega_m_max, perp_multiple)
        self.detection = DetectionConfig(detector, threshold, min_area, deblend_nthresh, deblend_cont, max_sources)
        if z_edges is None:
            z_edges = np.linspace(self.geometry.z_min, self.geometry.z_max, 5)
        self.binning = XODBinning(cr_edges, hr_edges, z_edges)
        self.n_lightcones = _check("n_lightcones", n_lightcones, 1, 1000, integer=True)
        self.z_init = _check("z_init", z_init, self.geometry.z_max, 200.0)
        if not self.z_init > self.geometry.z_max:
            raise ValueError(f"z_init = {z_init!r} is outside its allowed range (z_max = {z_max}, 200]")
        self.n_steps = _check("n_steps", n_steps, 1, 1000, integer=True)
        self.mesh_factor = _check("mesh_factor", mesh_factor, 1, 4, integer=True)
        self.cr_min = _check("cr_min", cr_min, 0.0, 1e6)
        if not self.cr_min > 0:
            raise ValueError(f"cr_min = {cr_min!r} is outside its allowed range (0, 1e6]")
        self.softness = _check("softness", softness, 1e-12, 1.0)
        self.softness_z = _check("softness_z", softness_z, 1e-12, 1.0)
        self.isophote_softness = None if isophote_softness is None else _check("isophote_softness", isophote_softness, 1e-12, 1.0)

    @property
    def area_deg2(self) -> float:
        """Total survey area [deg²]: lightcones × area of one."""
        return self.n_lightcones * self.geometry.area_deg2


def seed001_survey(**overrides) -> SurveyConfig:
    """Seed 001's survey: 200 deg² as 10 lightcones of 20 deg², z 0.1–0.5 in 12 boxes, 0.39 h⁻¹ Mpc, 1′ pixels."""
    kwargs = dict(area_deg2=20.0, n_lightcones=10, z_min=0.1, z_max=0.5, n_boxes=12, cell_size=0.39,
                  pixel_arcmin=1.0, cr_min=0.02) | overrides
    return SurveyConfig(**kwargs)


def lightcone_to_z1(devices: int = 8, **overrides) -> SurveyConfig:
    """Seed 001's survey carried to z = 1 (it stopped at 0.5 because a box had to fit one GPU).

    200 deg² as 10 lightcones of 20 deg², z 0.1–1 in 24 boxes (≈ 85–100 h⁻¹ Mpc deep, as seed 001's
    boxes), 0.39 h⁻¹ Mpc cells, 1′ pixels, the CR cut at 0.02 counts s⁻¹, and the transverse cells a
    multiple of `devices`, so each box decomposes over that many devices
    (`jaxcluster.survey.decomposed`). The farthest box is 1376–1464 × n_⊥ × ~220 cells (Ω_m 0.5–0.1);
    `benchmarks/results/scaling.json` projects its memory. On a laptop, override the resolution
    (`cell_size=4, area_deg2=2, n_lightcones=1`).
    """
    kwargs = dict(area_deg2=20.0, n_lightcones=10, z_min=0.1, z_max=1.0, n_boxes=24, cell_size=0.39,
                  pixel_arcmin=1.0, cr_min=0.02, perp_multiple=devices) | overrides
    return SurveyConfig(**kwargs)


class SurveyResult(eqx.Module):
    """A simulated survey (leading axes: lightcone, box).

    Attributes:
        layout: `BoxLayout` of the boxes (the same for every lightcone).
        maps: `BoxMaps` with leading axes (n_lightcones, n_boxes).
        segmentation: (n_lightcones, n_boxes, n_pix, n_pix) int32 labels.
        catalogue: `Catalogue` with leading axes (n_lightcones, n_boxes, max_sources).
        xod: (n_cr, n_hr, n_z) hard XOD of the whole survey (counts).
        xod_soft: (n_cr, n_hr, n_z) soft XOD (differentiable).
    """

    layout: BoxLayout
    maps: BoxMaps
    segmentation: Int[Array, "n_lc n_box n_pix n_pix"]
    catalogue: Catalogue
    xod: Float[Array, "n_cr n_hr n_z"]
    xod_soft: Float[Array, "n_cr n_hr n_z"]


def simulate_box(
    theta: ThetaSim,
    key: PRNGKeyArray,
    z: Float[Array, ""],
    chi: Float[Array, ""],
    depth: Float[Array, ""],
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    segmentation: Int[Array, "n_pix n_pix"] | None = None,
    growth: GrowthTable | None = None,
    particles: Float[Array, "n_ptcl 3"] | None = None,
) -> tuple[BoxMaps, Int[Array, "n_pix n_pix"], Catalogue]:
    """One box of a lightcone: initial conditions → PM → eLDL → maps → detection → catalogue.

    `simulate_survey` maps this over the boxes (`lax.map`); the CLI calls it
    box by box to show progress. Same key, same box.

    Args:
        theta: θ_sim.
        key: the box's PRNG key (its initial conditions).
        z: box redshift (`BoxLayout.z[b]`).
        chi: axial comoving distance of its centre [h⁻¹ Mpc].
        depth: true box depth [h⁻¹ Mpc].
        config: `SurveyConfig`.
        eldl: baryon painter.
        table: count-rate emissivity table.
        segmentation: labels to measure in (held fixed) instead of detecting.
        growth: `growth_table` of θ_sim's cosmology (computed if None).
        particles: the box's particles if already evolved (`box_particles` of the
            same θ_sim, key, z and config; `jaxcluster simulate` keeps them to find
            the halos); None: evolved here.

    Returns:
        (maps, segmentation, catalogue) of the box.
    """
    geom = config.geometry
    cosmo = Cosmology.from_theta(theta)
    pos = box_particles(theta, key, z, config, growth=growth) if particles is None else particles
    maps = box_maps(pos, theta, z, chi, depth, geom, eldl, table, cosmo)
    seg, cat = detect_and_measure(maps, z, config, segmentation)
    return maps, seg, cat


def detect_and_measure(
    maps: BoxMaps, z: Float[ArrayLike, ""], config: SurveyConfig, segmentation: Int[Array, "n_pix n_pix"] | None = None,
) -> tuple[Int[Array, "n_pix n_pix"], Catalogue]:
    """Detection on a box's [0.5–2] keV map (unless `segmentation` is given) and the sources' count rates."""
    geom = config.geometry
    seg = segmentation
    if seg is None:
        seg = segment(jnp.sum(maps.count_rate, axis=-1), geom, config.detection)
    iso = None if config.isophote_softness is None else (config.detection.pixel_threshold(geom), config.isophote_softness)
    return seg, measure_sources(seg, maps.count_rate, geom, z, config.detection.max_sources, isophote=iso)


def box_particles(
    theta: ThetaSim,
    key: PRNGKeyArray,
    z: Float[ArrayLike, ""],
    config: SurveyConfig,
    *,
    growth: GrowthTable | None = None,
) -> Float[Array, "n_ptcl 3"]:
    """The particles of one lightcone box at its redshift: white noise from `key` → 2LPT at z_init → FastPM.

    `simulate_box` starts from these; the same (θ_sim, key, z) gives the same particles.

    Args:
        theta: θ_sim.
        key: the box's PRNG key (`box_keys`).
        z: box redshift.
        config: `SurveyConfig`.
        growth: `growth_table` of θ_sim's cosmology (computed if None).

    Returns:
        (n_ptcl, 3) comoving positions [h⁻¹ Mpc] in the padded periodic box (any image).
    """
    cosmo = Cosmology.from_theta(theta)
    growth = growth_table(cosmo) if growth is None else growth
    pm = config.geometry.pm_config(config.mesh_factor)
    dtype = jnp.result_type(float)
    a_init = 1.0 / (1.0 + config.z_init)
    frac = jnp.linspace(0.0, 1.0, config.n_steps + 1, dtype=dtype)
    noise = white_noise(key, pm.particle_shape, dtype=dtype)
    pos, p = lpt(linear_field(noise, cosmo, pm), cosmo, growth, pm, a_init, order=2)
    a_box = 1.0 / (1.0 + jnp.asarray(z).astype(dtype))
    run = nbody(pos, p, cosmo, pm, a_init + (a_box - a_init) * frac, growth=growth)
    return run.pos[-1]


def box_fields(
    pos: Float[Array, "n_ptcl 3"], theta: ThetaSim, z: Float[ArrayLike, ""], config: SurveyConfig, eldl: ExtendedLDL,
) -> tuple[Float[Array, "n_perp n_perp n_par"], Float[Array, "n_perp n_perp n_par"], Float[Array, "n_perp n_perp n_par"]]:
    """The 3-D fields `box_maps` projects: (ρ_m [h² M☉ Mpc⁻³], comoving n_e [cm⁻³], T [keV]) on the padded mesh.

    Mesh cell i is centred at iΔ (CIC). ρ_m = (1 + δ) Ω_m ρ_c0 (comoving); n_e and T from the eLDL,
    as in `box_maps`. Used for cutouts around detections (`jaxcluster.fields.detections`).
    """
    geom = config.geometry
    cosmo = Cosmology.from_theta(theta)
    dtype = pos.dtype
    with jax.ensure_compile_time_eval():
        n_e_mean = mean_electron_density()
    n_e_rel, T = eldl(pos, theta, jnp.asarray(z).astype(dtype), geom.box_size, geom.mesh_shape)
    rho = paint_one_plus_delta(pos, geom.box_size, geom.mesh_shape) * (cosmo.Omega_m.astype(dtype) * RHO_CRIT0_MSUN_H2_MPC3)
    return rho, n_e_rel.astype(dtype) * jnp.asarray(n_e_mean, dtype), T.astype(dtype)


def _lightcone(theta, key, seg_given, layout, growth, config, eldl, table):
    def one_box(args):
        k, z, chi, seg = args
        return simulate_box(theta, k, z, chi, layout.depth, config, eldl=eldl, table=table, segmentation=seg,
                            growth=growth)

    keys = jax.random.split(key, config.geometry.n_boxes)
    return jax.lax.map(one_box, (keys, layout.z, layout.chi, seg_given))


def box_keys(key: PRNGKeyArray, config: SurveyConfig) -> Key[Array, "n_lc n_box"]:
    """The PRNG key of every box: `split(split(key, n_lightcones)[i], n_boxes)[b]`."""
    return jax.vmap(lambda k: jax.random.split(k, config.geometry.n_boxes))(jax.random.split(key, config.n_lightcones))


def survey_xods(cat: Catalogue, config: SurveyConfig) -> tuple[Float[Array, "n_cr n_hr n_z"], Float[Array, "n_cr n_hr n_z"]]:
    """(hard, soft) XODs of a catalogue with any leading axes (all its sources together).

    The soft XOD uses the soft-isophote count rates where the catalogue has them (`Catalogue.soft_measured`).
    """
    z = cat.z.reshape(-1)
    valid = cat.valid.reshape(-1)
    cr, hr = cat.count_rate_total.reshape(-1), cat.hardness_ratio.reshape(-1)
    hard = hard_xod(jax.lax.stop_gradient(cr), jax.lax.stop_gradient(hr), jax.lax.stop_gradient(z), valid,
                    config.binning, config.cr_min)
    soft_cat = cat.soft_measured
    cr, hr = soft_cat.count_rate_total.reshape(-1), soft_cat.hardness_ratio.reshape(-1)
    soft = soft_xod(cr, hr, z, valid, config.binning, config.cr_min, config.softness, config.softness_z)
    return hard, soft


def simulate_survey(
    theta: ThetaSim,
    key: PRNGKeyArray,
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
    segmentation: Int[Array, "n_lc n_box n_pix n_pix"] | None = None,
) -> SurveyResult:
    """Simulate a survey: maps, segmentations, catalogues and XODs of every box of every lightcone.

    Args:
        theta: one θ_sim (vmap for several).
        key: PRNG key; lightcone i uses `split(key, n_lightcones)[i]`, box b of it
            `split(that, n_boxes)[b]` (independent initial conditions per box).
        config: `SurveyConfig` (static).
        eldl: baryon painter (`ExtendedLDL`); default `baryons.default_eldl()`.
        table: count-rate table; default `xray.default_emissivity_table()` (EPIC-pn).
        segmentation: (n_lightcones, n_boxes, n_pix, n_pix) labels to measure
            the sources in instead of detecting them (e.g. a previous result's
            `segmentation`): the segmentation held fixed, as for gradients
            and their finite-difference checks.

    Returns:
        `SurveyResult`.

    Raises:
        ValueError: a segmentation of the wrong shape, or a table without two
            bands. Ω_m outside [omega_m_min, omega_m_max] of the configuration
            raises at run time (`eqx.error_if`, also under jit).
    """
    if eldl is None:
        from ..baryons import default_eldl

        eldl = default_eldl()
    table = default_emissivity_table() if table is None else table
    if len(table.bands_keV) != 2:
        raise ValueError(f"the table must have 2 bands ([0.5–1], [1–2] keV), got {table.bands_keV}")
    cosmo = Cosmology.from_theta(theta)
    layout = box_layout(cosmo, config.geometry)
    growth = growth_table(cosmo)
    geom = config.geometry
    keys = jax.random.split(key, config.n_lightcones)
    if segmentation is not None:
        want = (config.n_lightcones, geom.n_boxes, geom.n_pix, geom.n_pix)
        if segmentation.shape != want:
            raise ValueError(f"segmentation shape {segmentation.shape} != (n_lightcones, n_boxes, n_pix, n_pix) = {want}")
    maps, seg, cat = jax.lax.map(
        lambda args: _lightcone(theta, args[0], args[1], layout, growth, config, eldl, table),
        (keys, segmentation),
    )
    hard, soft = survey_xods(cat, config)
    return SurveyResult(layout=layout, maps=maps, segmentation=seg, catalogue=cat, xod=hard, xod_soft=soft)


def simulate_xod(
    theta: ThetaSim,
    key: PRNGKeyArray,
    config: SurveyConfig,
    *,
    soft: bool = False,
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
) -> Float[Array, "n_cr n_hr n_z"]:
    """The survey's XOD for one θ_sim and key (`simulate_survey`'s, without keeping the maps).

    Args:
        theta: one θ_sim.
        key: PRNG key.
        config: `SurveyConfig`.
        soft: return the soft (differentiable) XOD instead of the histogram.
        eldl: baryon painter; default `baryons.default_eldl()`.
        table: count-rate table; default EPIC-pn.

    Returns:
        (n_cr, n_hr, n_z) counts.
    """
    res = simulate_survey(theta, key, config, eldl=eldl, table=table)
    return res.xod_soft if soft else res.xod


def simulate_xod_batch(
    theta: ThetaSim,
    keys: Key[Array, " batch"],
    config: SurveyConfig,
    *,
    soft: bool = False,
    mesh: Mesh | None = None,
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
) -> Float[Array, "batch n_cr n_hr n_z"]:
    """XODs of a batch of (θ_sim, key), split over devices (`jax.shard_map`, no communication).

    Each device runs its contiguous share one sample after another
    (`lax.map`), so a device holds one box at a time.

    Args:
        theta: `ThetaSim` whose fields have shape (batch,).
        keys: (batch,) PRNG keys.
        config: `SurveyConfig`.
        soft: soft XODs instead of histograms.
        mesh: 1-D `jax.sharding.Mesh`; default all devices (`nbody.sharding.device_mesh`).
        eldl: baryon painter; default `baryons.default_eldl()`.
        table: count-rate table; default EPIC-pn.

    Returns:
        (batch, n_cr, n_hr, n_z) XODs, sharded over the devices.

    Raises:
        ValueError: the batch is not a multiple of the device count, or θ and keys differ in length.
    """
    mesh = device_mesh("batch") if mesh is None else mesh
    (name,) = mesh.axis_names
    n_dev = int(mesh.shape[name])
    theta_arr = theta.to_array()
    if theta_arr.ndim != 2 or keys.shape != theta_arr.shape[:1]:
        raise ValueError(f"theta fields must have shape (batch,) and keys shape (batch,), got {theta_arr.shape[:-1]} and {keys.shape}")
    if theta_arr.shape[0] % n_dev:
        raise ValueError(f"batch size {theta_arr.shape[0]} must be a multiple of the number of devices {n_dev}")
    if eldl is None:
        from ..baryons import default_eldl

        eldl = default_eldl()
    table = default_emissivity_table() if table is None else table
    spec = PartitionSpec(name)
    key_data = jax.random.key_data(keys)

    @eqx.filter_jit
    def run(th_arr, kd, eldl, table):
        def local(th_l, kd_l):
            def one(args):
                t, k = args
                return simulate_xod(ThetaSim.from_array(t), jax.random.wrap_key_data(k), config, soft=soft, eldl=eldl, table=table)

            return jax.lax.map(one, (th_l, kd_l))

        return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)(th_arr, kd)

    return run(theta_arr, key_data, eldl, table)
