r"""Cutouts around the clusters the survey pipeline detects (not only around catalogued halos).

The survey (`jaxcluster.survey`) detects sources on each lightcone box's
[0.5–2] keV map and measures a flux-weighted centroid ξ (tangent-plane
coordinates [rad] from the field centre, `survey.Catalogue.xi`). A detection
becomes a 3-D centre in the box's padded periodic mesh (`detection_centres`):

* **transverse**: the maps resample box column c onto the pixels as the
  interval $[(c - ½ - n_⊥/2)Δ, (c + ½ - n_⊥/2)Δ]$ of transverse distance
  $ξχ_b$ (`survey.maps.resampling_weights`), centred on the cell's CIC node
  cΔ (the convention of `halo_cutouts`) shifted by the box's half width; so
  the detection lies at mesh coordinate $x = ξχ_b + n_⊥Δ/2$.
* **line of sight** (the mesh's last axis, where a map has no information):
  the cell of peak bremsstrahlung emissivity $n_e^2\sqrt T$ summed over the
  3 × 3 columns around the detection, inside the box's true depth
  (`survey.los_weights`), refined to the emissivity-weighted mean over that
  cell and its two neighbours.

Around these centres `detection_cutouts` cuts the four channels of
`halo_cutouts` (Compton-y, X-ray surface brightness, projected gas and dark
matter) from the box's 3-D fields (`survey.box_fields`), along any of the
three axes (axis 2 is the survey's line of sight). `survey_box_detections`
re-simulates one box from its key (the same particles, maps, segmentation
and catalogue as `simulate_survey`), and `make_detection_cutout_dataset`
stores the cutouts of every box of a survey with the chunked, resumable
writer of `jaxcluster.io` (one chunk per lightcone box), split by
cluster (every projection of one detection in one split) and normalised
globally (`write_cutout_dataset`).

Cluster id of a detection: ``(lightcone × n_boxes + box) × max_sources + slot``.
"""

from __future__ import annotations

import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..baryons.eldl import ExtendedLDL
from ..cosmology import Cosmology, growth_table
from ..params import ThetaSim
from ..survey.detect import Catalogue, measure_sources, segment
from ..survey.lightcone import LightconeGeometry, box_layout, los_weights
from ..survey.maps import box_maps
from ..survey.pipeline import SurveyConfig, box_fields, box_keys, box_particles
from ..xray.emissivity import EmissivityTable
from .cutouts import CHANNELS, CutoutConfig, CutoutSet, halo_cutouts, write_cutout_dataset

__all__ = ["detection_centres", "detection_cutouts", "survey_box_detections", "make_detection_cutout_dataset"]


def detection_centres(
    xi: Float[Array, "s 2"],
    n_e_cm3: Float[Array, "n_perp n_perp n_par"],
    T_keV: Float[Array, "n_perp n_perp n_par"],
    chi: Float[Array, ""],
    depth: Float[Array, ""],
    geometry: LightconeGeometry,
) -> Float[Array, "s 3"]:
    """3-D mesh centres [h⁻¹ Mpc] of detections at tangent-plane positions ξ in one lightcone box (module docstring).

    Args:
        xi: (s, 2) detection centroids (`Catalogue.xi`) [rad].
        n_e_cm3: the box's comoving electron density [cm⁻³] (`survey.box_fields`).
        T_keV: its temperature [keV].
        chi: axial comoving distance of the box centre [h⁻¹ Mpc] (`BoxLayout.chi[b]`).
        depth: true box depth [h⁻¹ Mpc] (`BoxLayout.depth`).
        geometry: the lightcone geometry.

    Returns:
        (s, 3) centres in the mesh's coordinates (cell i centred at iΔ), inside the box.
    """
    cell = geometry.cell_size
    n_perp, n_par = geometry.n_perp, geometry.n_par
    dtype = n_e_cm3.dtype
    trans = jnp.asarray(xi, dtype) * jnp.asarray(chi, dtype) + 0.5 * n_perp * cell  # (s, 2)
    w = los_weights(jnp.asarray(depth), geometry).astype(dtype)
    emis = n_e_cm3 * n_e_cm3 * jnp.sqrt(jnp.maximum(T_keV, 0.0))  # ∝ bremsstrahlung emissivity

    def one(t):
        i0 = jnp.round(t / cell).astype(jnp.int32)
        offs = jnp.arange(-1, 2, dtype=jnp.int32)
        ii = jnp.mod(i0[0] + offs, n_perp)
        jj = jnp.mod(i0[1] + offs, n_perp)
        column = jnp.sum(emis[ii[:, None], jj[None, :], :], axis=(0, 1)) * w  # (n_par,) inside the depth only
        kmax = jnp.argmax(column).astype(jnp.int32)
        near = kmax + offs  # the peak cell and its neighbours (unwrapped: cells beyond the depth weigh 0)
        p = jnp.take(column, jnp.mod(near, n_par))
        los = jnp.sum(p * near.astype(dtype)) / jnp.maximum(jnp.sum(p), jnp.finfo(dtype).tiny) * cell
        los = jnp.where(jnp.sum(p) > 0, los, kmax.astype(dtype) * cell)
        return jnp.concatenate([jnp.mod(t, n_perp * cell), jnp.mod(los, n_par * cell)[None]])

    return jax.vmap(one)(trans)


def detection_cutouts(
    xi: Float[Array, "s 2"],
    rho_dm: Float[Array, "n_perp n_perp n_par"],
    n_e_cm3: Float[Array, "n_perp n_perp n_par"],
    T_keV: Float[Array, "n_perp n_perp n_par"],
    chi: Float[Array, ""],
    depth: Float[Array, ""],
    z: float | Float[Array, ""],
    cosmo: Cosmology,
    geometry: LightconeGeometry,
    config: CutoutConfig = CutoutConfig(),
    axes: tuple[int, ...] = (0, 1, 2),
) -> tuple[Float[Array, "s 3"], Float[Array, "s n_axis 4 n_pix n_pix"]]:
    """Centres (`detection_centres`) and `halo_cutouts` of every channel around them, for one box.

    Args:
        xi: (s, 2) detection centroids [rad].
        rho_dm: the box's comoving matter density [h² M☉ Mpc⁻³] (`survey.box_fields`).
        n_e_cm3: its comoving electron density [cm⁻³].
        T_keV: its temperature [keV].
        chi: axial comoving distance of the box centre [h⁻¹ Mpc].
        depth: true box depth [h⁻¹ Mpc].
        z: box redshift.
        cosmo: the box's cosmology.
        geometry: lightcone geometry (the mesh and pixels).
        config: cutout geometry (must fit in the padded box).
        axes: projection axes (2: the survey's line of sight).

    Returns:
        ((s, 3) centres [h⁻¹ Mpc], (s, len(axes), 4, n_pix, n_pix) maps in `CHANNEL_UNITS`).
    """
    centres = detection_centres(xi, n_e_cm3, T_keV, chi, depth, geometry)
    maps = halo_cutouts(centres, rho_dm, n_e_cm3, T_keV, geometry.box_size, z, cosmo, config, axes)
    return centres, maps



def survey_box_detections(
    theta: ThetaSim,
    key: PRNGKeyArray,
    box: int,
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    cutout: CutoutConfig = CutoutConfig(),
    axes: tuple[int, ...] = (0, 1, 2),
) -> tuple[Catalogue, Float[Array, "s 3"], Float[Array, "s n_axis 4 n_pix n_pix"]]:
    """Re-simulate box `box` of a lightcone from its key; detect; cut around every catalogue slot.

    The particles, maps, segmentation and catalogue are those of
    `simulate_survey` for the lightcone whose boxes have keys
    `box_keys(...)[lightcone]` (`key` is the box's own key). Invalid slots
    get cutouts too (around ξ = 0); mask with ``catalogue.valid``.

    Args:
        theta: θ_sim.
        key: the box's PRNG key (`survey.box_keys(survey_key, config)[lightcone, box]`).
        box: box index in the lightcone (its redshift and distance, `survey.box_layout`).
        config: `SurveyConfig`.
        eldl: baryon painter.
        table: count-rate table.
        cutout: cutout geometry.
        axes: projection axes.

    Returns:
        (catalogue (max_sources slots), centres (s, 3), maps (s, len(axes), 4, n_pix, n_pix)).

    Raises:
        ValueError: `box` outside [0, n_boxes). θ_sim must be concrete (one survey; no vmap).
    """
    if not 0 <= int(box) < config.geometry.n_boxes:
        raise ValueError(f"box = {box} is outside its allowed range [0, {config.geometry.n_boxes})")
    cat, centres, rho, n_e, T, z = _box_detections(theta, key, jnp.asarray(int(box)), config, eldl, table)
    cosmo = Cosmology.from_theta(theta)
    maps = halo_cutouts(centres, rho, n_e, T, config.geometry.box_size, float(z), cosmo, cutout, tuple(axes))
    return cat, centres, maps


@eqx.filter_jit  # one compilation per survey configuration (box index, θ_sim and key traced)
def _box_detections(theta, key, box, config, eldl, table):
    geom = config.geometry
    cosmo = Cosmology.from_theta(theta)
    layout = box_layout(cosmo, geom)
    z, chi = layout.z[box], layout.chi[box]
    pos = box_particles(theta, key, z, config, growth=growth_table(cosmo))
    maps = box_maps(pos, theta, z, chi, layout.depth, geom, eldl, table, cosmo)
    seg = segment(jnp.sum(maps.count_rate, axis=-1), geom, config.detection)
    cat = measure_sources(seg, maps.count_rate, geom, z, config.detection.max_sources)
    rho, n_e, T = box_fields(pos, theta, z, config, eldl)
    centres = detection_centres(cat.xi, n_e, T, chi, layout.depth, geom)
    return cat, centres, rho, n_e, T, z


def make_detection_cutout_dataset(
    out_path: str | os.PathLike,
    theta: ThetaSim,
    key: PRNGKeyArray,
    config: SurveyConfig,
    *,
    cutout: CutoutConfig = CutoutConfig(),
    axes: tuple[int, ...] = (0, 1, 2),
    cr_min: float | None = None,
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    log: bool | tuple[bool, ...] = True,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
) -> CutoutSet:
    """Cutouts around every detected cluster of a simulated survey, stored with the resumable dataset writer.

    One chunk per (lightcone, box): the box is re-simulated from its key
    (`survey_box_detections`), its valid detections with CR[0.5–2] >
    `cr_min` are cut along `axes`, and `write_cutout_dataset` merges,
    splits by cluster and normalises. A killed build resumes at the first
    missing box. ``halo/<name>`` holds the detections' properties: ``pos``
    (3-D centre [h⁻¹ Mpc]), ``xi`` [rad], ``count_rate`` (per band
    [counts s⁻¹]), ``area`` [pixels], ``z``, ``lightcone``, ``box``, ``slot``.

    Args:
        out_path: HDF5 file to write.
        theta: θ_sim of the survey.
        key: the survey's PRNG key (as given to `simulate_survey`).
        config: `SurveyConfig`.
        cutout: cutout geometry.
        axes: projection axes (2: the line of sight).
        cr_min: CR[0.5–2] cut [counts s⁻¹] (default the survey's `cr_min`).
        eldl: baryon painter (default `baryons.default_eldl()`).
        table: count-rate table (default EPIC-pn).
        fractions: (train, val, test) fractions of the detections.
        seed: split seed.
        log: log₁₀ normalisation per channel.
        metadata: extra JSON metadata (``synthetic`` is set: the survey is simulated).
        progress: tqdm bar over boxes.

    Returns:
        The stored set (`load_cutouts`).
    """
    if eldl is None:
        from ..baryons import default_eldl

        eldl = default_eldl()
    if table is None:
        from ..xray.emissivity import default_emissivity_table

        table = default_emissivity_table()
    cr_min = config.cr_min if cr_min is None else float(cr_min)
    n_box, n_slot = config.geometry.n_boxes, config.detection.max_sources
    keys = box_keys(key, config)
    theta_list = [float(v) for v in np.asarray(theta.to_array())]

    def make_chunk(c: int) -> dict[str, np.ndarray]:
        lc, b = divmod(c, n_box)
        cat, centres, maps = survey_box_detections(theta, keys[lc, b], b, config, eldl=eldl, table=table,
                                                   cutout=cutout, axes=axes)
        keep = np.flatnonzero(np.asarray(cat.selected(cr_min)))
        na = len(axes)
        rep = lambda a: np.repeat(np.asarray(a)[keep], na, axis=0)  # noqa: E731
        return {"maps": np.asarray(maps, np.float32)[keep].reshape((-1, len(CHANNELS), cutout.n_pix, cutout.n_pix)),
                "cluster_id": np.repeat(c * n_slot + keep, na).astype(np.int64),
                "axis": np.tile(np.asarray(axes, np.int8), keep.size),
                "halo/pos": rep(centres), "halo/xi": rep(cat.xi), "halo/count_rate": rep(cat.count_rate),
                "halo/area": rep(cat.area), "halo/z": rep(cat.z),
                "halo/lightcone": np.full(keep.size * na, lc, np.int32), "halo/box": np.full(keep.size * na, b, np.int32),
                "halo/slot": np.repeat(keep, na).astype(np.int32)}

    from ..io.chunks import pytree_digest

    settings = {"theta": theta_list, "key_data": np.asarray(jax.random.key_data(key)).ravel().tolist(),
                "survey": repr(config), "n_pix": cutout.n_pix, "axes": [int(a) for a in axes], "cr_min": cr_min,
                "painter_digest": pytree_digest((eldl, table))}  # a resume with other weights is refused
    meta = {"synthetic": True, "generator": "jaxcluster.fields.detections.make_detection_cutout_dataset",
            "theta_sim": theta_list, "cr_min": cr_min, "fractions": list(fractions), "seed": seed,
            "cluster_id": "(lightcone * n_boxes + box) * max_sources + slot"} | (metadata or {})
    return write_cutout_dataset(out_path, config.n_lightcones * n_box, make_chunk, pixel_size=cutout.pixel_size,
                                depth=cutout.depth, fractions=fractions, seed=seed, log=log, settings=settings,
                                metadata=meta, progress=progress)
