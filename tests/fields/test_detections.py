"""Cutouts around survey detections: an injected source is found where it was put; a tiny survey end to end (slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.cosmology import Cosmology
from jaxcluster.fields import CHANNELS, CutoutConfig, halo_cutouts
from jaxcluster.fields.detections import detection_centres
from jaxcluster.survey import LightconeGeometry, box_layout, los_weights, measure_sources, resample, resampling_weights

GEOM = LightconeGeometry(area_deg2=4.0, z_min=0.1, z_max=0.5, n_boxes=12, cell_size=2.0, pixel_arcmin=6.0,
                         omega_m_min=0.25, omega_m_max=0.35)
COSMO = Cosmology(Omega_m=0.3, sigma_8=0.8)


def _blob(centre, sigma, amp, shape, cell):
    """Gaussian n_e on the mesh, cell i centred at iΔ (periodic transversally)."""
    grids = np.meshgrid(*[np.arange(n) * cell for n in shape], indexing="ij")
    d2 = 0.0
    for a, g in enumerate(grids):
        L = shape[a] * cell
        d = g - centre[a]
        d2 = d2 + (d - L * np.round(d / L)) ** 2
    return amp * np.exp(-0.5 * d2 / sigma**2)


def _centroid(img, pixel):
    n = img.shape[0]
    c = (np.arange(n) - n / 2 + 0.5) * pixel
    tot = img.sum()
    return np.array([(img.sum(1) * c).sum() / tot, (img.sum(0) * c).sum() / tot])


@pytest.mark.parametrize("centre", [(20.3, 27.1, 31.4), (26.2, 19.9, 60.7)])
def test_injected_source_is_found_where_it_was_put(centre):
    """Project an injected cluster as the survey maps do, detect, measure ξ: the 3-D centre comes back and its cutout is centred."""
    cell, shape = GEOM.cell_size, GEOM.mesh_shape
    layout = box_layout(COSMO, GEOM)
    chi, depth = layout.chi[4], layout.depth
    # a bright cluster and a fainter one in another column (the LOS search must pick the cluster's own column)
    n_e = 1e-7 + _blob(centre, 2.5, 1e-3, shape, cell) + _blob((31.0, 31.0, 20.0), 2.5, 3e-4, shape, cell)
    n_e = jnp.asarray(n_e, jnp.float32)
    T = jnp.ones(shape, jnp.float32)
    # the survey's projection (survey.maps): LOS sum weighted by the depth fractions, flux-conserving resampling
    w = los_weights(depth, GEOM).astype(jnp.float32)
    cols = jnp.sum(n_e**2 * w[None, None, :], axis=-1)
    flux_w, _ = resampling_weights(chi, GEOM, jnp.float32)
    image = resample(cols, flux_w)
    # a one-source segmentation around the injected cluster: the pixels above 1 % of its peak within 6 h⁻¹ Mpc
    # (the field, ~21 h⁻¹ Mpc wide at this box, covers the middle of the 48 h⁻¹ Mpc padded box)
    xi_pix = (np.arange(GEOM.n_pix) + 0.5 - 0.5 * GEOM.n_pix) * GEOM.pixel_rad * float(chi)
    t_true = np.asarray(centre[:2]) - 0.5 * (GEOM.n_perp - 1) * cell  # the maps' transverse coordinate of the centre
    near = (xi_pix[:, None] - t_true[0]) ** 2 + (xi_pix[None, :] - t_true[1]) ** 2 < 6.0**2
    seg = jnp.asarray((np.asarray(image) > 0.01 * float(image.max())) & near, jnp.int32)
    cat = measure_sources(seg, image[..., None], GEOM, layout.z[4], 4)
    assert bool(cat.valid[0]) and not bool(cat.valid[1])
    got = np.asarray(detection_centres(cat.xi, n_e, T, chi, depth, GEOM))[0]
    L = np.asarray(GEOM.box_size)
    err = got - np.asarray(centre)
    err -= L * np.round(err / L)
    # transverse: the flux-weighted centroid of the pixelised map (pixels ~0.7 cell) ; LOS: a 3-cell centroid
    np.testing.assert_allclose(err[:2], 0.0, atol=0.1 * cell)
    np.testing.assert_allclose(err[2], 0.0, atol=0.3 * cell)
    # and the cutout around it (along the line of sight) is centred on the cluster
    config = CutoutConfig(n_pix=12, pixel_size=1.0, depth=12.0)
    cut = np.asarray(halo_cutouts(got[None], jnp.full(shape, 1.0), n_e, T, GEOM.box_size, 0.3, COSMO, config, (2,)))
    sb = cut[0, 0, CHANNELS.index("xray_sb")]
    np.testing.assert_allclose(_centroid(sb, 1.0), -err[:2], atol=0.1)
    assert np.unravel_index(np.argmax(sb), sb.shape) in {(5, 5), (5, 6), (6, 5), (6, 6)}


@pytest.mark.slow
def test_tiny_survey_detection_cutouts(tmp_path):
    """A 2-box survey: the re-simulated box has the survey's catalogue; the stored set is split by cluster, centred, resumable."""
    from jaxcluster.baryons import ExtendedLDL
    from jaxcluster.fields import load_cutouts
    from jaxcluster.fields.detections import make_detection_cutout_dataset, survey_box_detections
    from jaxcluster.params import ThetaSim
    from jaxcluster.survey import SurveyConfig, box_keys, simulate_survey
    from jaxcluster.xray.emissivity import default_emissivity_table

    cfg = SurveyConfig(area_deg2=4.0, z_min=0.1, z_max=0.3, n_boxes=2, cell_size=2.0, pixel_arcmin=6.0,
                       omega_m_min=0.25, omega_m_max=0.35, n_steps=3, cr_min=5e-4, threshold=3e-6,
                       cr_edges=np.geomspace(5e-4, 0.5, 5))
    eldl, table = ExtendedLDL.init(jax.random.key(0)), default_emissivity_table()
    theta, key = ThetaSim.fiducial(), jax.random.key(3)
    cutout = CutoutConfig(n_pix=8, pixel_size=1.0)
    cat, centres, maps = survey_box_detections(theta, box_keys(key, cfg)[0, 1], 1, cfg, eldl=eldl, table=table,
                                               cutout=cutout)
    res = simulate_survey(theta, key, cfg, eldl=eldl, table=table)
    np.testing.assert_array_equal(np.asarray(res.catalogue.valid[0, 1]), np.asarray(cat.valid))
    np.testing.assert_allclose(np.asarray(res.catalogue.count_rate[0, 1]), np.asarray(cat.count_rate), rtol=1e-4, atol=1e-12)
    sel = np.asarray(cat.selected(cfg.cr_min))
    assert sel.sum() >= 3
    # transverse centre = ξ χ_b + (n⊥ − 1)Δ/2; LOS inside the true depth
    layout = box_layout(Cosmology.from_theta(theta), cfg.geometry)
    c = np.asarray(centres)[sel]
    g = cfg.geometry
    t = np.asarray(cat.xi)[sel] * float(layout.chi[1]) + 0.5 * (g.n_perp - 1) * g.cell_size
    np.testing.assert_allclose(c[:, :2], np.mod(t, g.n_perp * g.cell_size), atol=1e-3)
    assert np.all((c[:, 2] > -g.cell_size) & (c[:, 2] < float(layout.depth)))
    # the X-ray cutouts along the line of sight peak near their centre (within a cell, i.e. 2 pixels, on the median)
    sb = np.asarray(maps)[sel, 2, CHANNELS.index("xray_sb")]
    offsets = [np.hypot(*_centroid(img, 1.0)) for img in sb]
    assert np.median(offsets) < g.cell_size
    # stored with the dataset writer, split by cluster
    out = tmp_path / "det.h5"
    s = make_detection_cutout_dataset(out, theta, key, cfg, cutout=cutout, eldl=eldl, table=table, fractions=(0.5, 0.5, 0.0))
    assert s.maps.shape[1:] == (4, 8, 8) and s.metadata["synthetic"]
    ids = np.unique(s.cluster_id)
    for i in ids:
        assert np.sum(s.cluster_id == i) == 3 and np.unique(s.split[s.cluster_id == i]).size == 1
    mine = s.halo["box"] == 1
    np.testing.assert_allclose(np.sort(s.halo["pos"][mine][::3], axis=0), np.sort(c, axis=0), atol=1e-4)
    assert load_cutouts(out).maps.shape == s.maps.shape
