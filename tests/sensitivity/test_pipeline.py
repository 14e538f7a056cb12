"""The survey pipeline's soft-XOD Jacobian by transposed pullbacks vs finite differences (slow), and the CLI's input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.baryons import ExtendedLDL
from jaxcluster.cli import main as cli_main
from jaxcluster.params import ThetaSim
from jaxcluster.sensitivity import catalogue_tangents, reference_segmentations, soft_xod_fixed
from jaxcluster.survey import SurveyConfig
from jaxcluster.xray import default_emissivity_table

# near-identity eLDL (as tests/test_survey_pipeline.py): n_e = n̄_e (1 + δ), T = (1 + δ) keV, bright enough to detect
ELDL = ExtendedLDL.init(jax.random.key(0))
TINY = dict(area_deg2=4.0, n_boxes=2, cell_size=2.0, pixel_arcmin=6.0, omega_m_min=0.29, omega_m_max=0.31,
            n_steps=3, cr_min=5e-4, threshold=3e-6, cr_edges=np.geomspace(5e-4, 0.5, 5), max_sources=8,
            softness=0.05, softness_z=0.01)


def test_cli_rejects_too_few_keys(tmp_path, capsys):
    assert cli_main(["sensitivity", "--out", str(tmp_path), "--keys", "1"]) == 2
    assert "--keys" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("isophote_softness", [None, 0.05])
def test_catalogue_tangents_match_fixed_segmentation_finite_differences(isophote_softness):
    """Forward mode through the whole pipeline (transposed pullbacks) vs central differences, each θ_sim axis;
    hard masks and soft isophotes."""
    config = SurveyConfig(**TINY, isophote_softness=isophote_softness)
    table = default_emissivity_table()
    theta = ThetaSim()
    key = jax.random.key(0)
    seg = reference_segmentations(theta, key[None], config, eldl=ELDL, table=table)[0]
    th = theta.to_array()
    cat = jax.jit(lambda t: catalogue_tangents(t, key, seg, config, eldl=ELDL, table=table))(th)
    val, jac = cat.soft_xod(config)
    f = jax.jit(lambda t: soft_xod_fixed(t, key, seg, config, eldl=ELDL, table=table))
    np.testing.assert_allclose(np.asarray(val), np.asarray(f(th)), rtol=1e-10)
    assert float(val.sum()) > 1.0
    h = np.array([1e-4, 1e-4, 1e-3, 1e-3, 1e-3, 1e-3])
    # Soft isophotes weigh the faint rim pixels by 1/softness, and those hang on few particles, whose CIC
    # weights are piecewise linear: kinks within ±h show at the 0.5 % level (an exact check of the
    # isophote derivative on smooth maps is in tests/test_survey_detect.py).
    rtol, atol = (2e-3, 2e-3) if isophote_softness is None else (2e-2, 1e-2)
    for a in range(6):
        e = jnp.zeros(6).at[a].set(h[a])
        fd = (f(th + e) - f(th - e)) / (2 * h[a])
        # central differences: O(h²) truncation; float64 round-off negligible
        np.testing.assert_allclose(np.asarray(jac[a]), np.asarray(fd), rtol=rtol, atol=atol * float(jnp.abs(fd).max()) + 1e-12)
