"""The survey forward model end to end on a tiny lightcone: jit, vmap, sharding, gradients, errors.

The configuration is deliberately coarse (2 h⁻¹ Mpc cells, 6′ pixels,
3 PM steps; 12 boxes of 24 × 24 × 44 voxels) so that one compilation takes
~20 s; its detection threshold (~3× the median pixel) and CR cut are set
for it (the physics at that resolution is not the point here: shapes,
determinism, batching and derivatives are).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.baryons import ExtendedLDL
from jaxcluster.cosmology import Cosmology
from jaxcluster.params import ThetaSim
from jaxcluster.survey import SurveyConfig, box_layout, seed001_survey, simulate_survey, simulate_xod_batch
from jaxcluster.survey.detect import measure_sources

TINY = dict(area_deg2=4.0, n_boxes=12, cell_size=2.0, pixel_arcmin=6.0, omega_m_min=0.25, omega_m_max=0.35,
            n_steps=3, cr_min=5e-4, threshold=3e-6, cr_edges=np.geomspace(5e-4, 0.5, 5))
# The near-identity eLDL (n_e = n̄_e (1 + δ), T = (1 + δ) keV): these tests do not depend on the shipped
# weights, which are retrained; the CLI and example tests run the defaults.
ELDL = ExtendedLDL.init(jax.random.key(0))
N_DEV = 4


@pytest.fixture(scope="module")
def config():
    return SurveyConfig(**TINY)


@pytest.fixture(scope="module")
def batch(config):
    """One vmapped, jitted run over 4 (θ, key) pairs: (θ₀, k₀) twice, (θ₁, k₁), (θ₀, k₁)."""
    theta = ThetaSim(Omega_m=jnp.array([0.3, 0.3, 0.33, 0.3]), sigma_8=jnp.array([0.8, 0.8, 0.9, 0.8]),
                     A_SN1=jnp.ones(4), A_SN2=jnp.ones(4), A_AGN1=jnp.ones(4), A_AGN2=jnp.ones(4))
    k0, k1 = jax.random.key(0), jax.random.key(1)
    keys = jnp.stack([k0, k0, k1, k1])
    res = jax.jit(jax.vmap(lambda th, k: simulate_survey(th, k, config, eldl=ELDL)))(theta, keys)
    return theta, keys, res


def test_vmap_determinism_xod_and_sharding(config, batch):
    """One compiled batch checks it all (under pytest-xdist a shared fixture would compile once per worker)."""
    theta, keys, res = batch
    g = config.geometry
    # shapes
    assert res.maps.count_rate.shape == (4, 1, 12, g.n_pix, g.n_pix, 2)
    assert res.segmentation.shape == (4, 1, 12, g.n_pix, g.n_pix) and res.segmentation.dtype == jnp.int32
    assert res.catalogue.count_rate.shape == (4, 1, 12, config.detection.max_sources, 2)
    assert res.xod.shape == (4, *config.binning.shape)
    # the XOD total equals the number of selected sources inside the diagram, per survey
    cat = res.catalogue
    cr = np.asarray(cat.count_rate_total)
    hr = np.asarray(cat.hardness_ratio)
    sel = np.asarray(cat.selected(config.cr_min))
    assert sel[0].sum() > 5, "the tiny survey should select a few sources"
    b = config.binning
    inside = (sel & (cr >= b.cr_edges[0]) & (cr < b.cr_edges[-1]) & (hr >= b.hr_edges[0]) & (hr < b.hr_edges[-1]))
    np.testing.assert_array_equal(np.asarray(res.xod).sum(axis=(1, 2, 3)), inside.reshape(4, -1).sum(axis=1))
    # box redshifts are the layout's, increasing
    z = np.asarray(res.layout.z[0])
    assert np.all(np.diff(z) > 0) and 0.1 < z[0] < z[-1] < 0.5
    # the same key gives the same survey, another key another one
    np.testing.assert_array_equal(np.asarray(res.xod[0]), np.asarray(res.xod[1]))
    np.testing.assert_array_equal(np.asarray(res.maps.count_rate[0]), np.asarray(res.maps.count_rate[1]))
    assert not np.array_equal(np.asarray(res.maps.count_rate[0]), np.asarray(res.maps.count_rate[3]))
    # measuring with the survey's own segmentation reproduces its catalogue
    m = config.detection.max_sources
    c = measure_sources(res.segmentation[2, 0, 5], res.maps.count_rate[2, 0, 5], g, res.layout.z[2, 5], m)
    np.testing.assert_allclose(np.asarray(c.count_rate), np.asarray(res.catalogue.count_rate[2, 0, 5]), rtol=1e-12)
    # the batch sharded over devices gives the vmapped XODs
    if len(jax.devices()) >= N_DEV:
        xods = simulate_xod_batch(theta, keys, config, eldl=ELDL)
        assert len({s.device for s in xods.addressable_shards}) == N_DEV
        np.testing.assert_allclose(np.asarray(xods), np.asarray(res.xod), rtol=0, atol=0)


def test_bad_configs_name_the_parameter():
    for kwargs, name in [
        (dict(area_deg2=-1.0), "area_deg2"),
        (dict(z_min=0.6, z_max=0.5), "z_min"),
        (dict(n_boxes=0), "n_boxes"),
        (dict(cell_size=0.0), "cell_size"),
        (dict(detector="sextractor"), "method"),
        (dict(cr_min=-0.02), "cr_min"),
        (dict(n_lightcones=0), "n_lightcones"),
        (dict(z_init=0.3), "z_init"),
        (dict(max_sources=0), "max_sources"),
        (dict(softness=0.0), "softness"),
    ]:
        with pytest.raises(ValueError, match=name) as err:
            SurveyConfig(**(TINY | kwargs))
        assert "range" in str(err.value) or "allowed" in str(err.value)


def test_omega_m_outside_padded_mesh_raises_under_jit(config):
    f = jax.jit(lambda om: box_layout(Cosmology(Omega_m=om), config.geometry).depth)
    assert float(f(0.3)) > 0
    with pytest.raises(Exception, match="Omega_m"):
        jax.block_until_ready(f(0.2))


def test_seed001_survey_is_200_deg2_in_10_lightcones():
    cfg = seed001_survey()
    assert cfg.n_lightcones == 10 and cfg.geometry.area_deg2 == 20.0 and cfg.area_deg2 == 200.0
    assert cfg.geometry.n_boxes == 12 and (cfg.geometry.z_min, cfg.geometry.z_max) == (0.1, 0.5)
    assert cfg.geometry.cell_size == 0.39 and cfg.cr_min == 0.02
    # the padded box at Ω_m = 0.1: 4.47° × χ(0.5) = 111.6 h⁻¹ Mpc wide, (χ(0.5) − χ(0.1))/12 = 94.3 deep,
    # in 0.39 h⁻¹ Mpc cells (χ from astropy in tests/test_survey_lightcone.py)
    assert cfg.geometry.mesh_shape == (287, 287, 242)
    assert cfg.geometry.n_pix == 268  # 4.47° in 1′ pixels


@pytest.mark.slow
def test_soft_xod_gradient_matches_finite_differences(config, batch):
    """d(soft XOD)/dΩ_m through the whole pipeline (PM included), segmentation held fixed, vs central differences.

    Slow (~60 s: reverse mode through 12 PM runs and the eLDL compiles slowly); CI runs the box-level
    version in tests/test_survey_maps.py.
    """
    _, _, res = batch
    seg = res.segmentation[0]
    key = jax.random.key(0)
    weights = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, config.binning.shape))

    @jax.jit
    def value_and_grad(om):
        def f(om):
            th = ThetaSim(Omega_m=om, sigma_8=0.8)
            r = simulate_survey(th, key, config, segmentation=seg, eldl=ELDL)
            return jnp.sum(weights * r.xod_soft)

        return jax.value_and_grad(f)(om)

    om0, eps = 0.3, 1e-4
    v0, g = value_and_grad(jnp.asarray(om0))
    vp, _ = value_and_grad(jnp.asarray(om0 + eps))
    vm, _ = value_and_grad(jnp.asarray(om0 - eps))
    fd = (vp - vm) / (2 * eps)
    assert float(v0) > 0 and np.isfinite(float(g)) and float(g) != 0.0
    # central differences: O(eps²) truncation; float64 round-off negligible
    np.testing.assert_allclose(float(g), float(fd), rtol=2e-3)
