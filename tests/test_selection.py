"""Selection function: smooth P(C1) (bounds, monotonicity, gradients), its fit, I/O; soft XOD weighting."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.analytic import XODBinning
from jaxcluster.observation.selection import (
    SelectionTable,
    fit_logistic,
    load_selection_table,
    save_selection_table,
    selection_probability,
)
from jaxcluster.survey.xod import soft_xod

SHIPPED = Path(__file__).resolve().parent.parent / "jaxcluster" / "data" / "selection_xxl_c1.npz"


def _table():
    cr = jnp.geomspace(0.003, 0.1, 5)
    rc = jnp.asarray([5.0, 20.0, 80.0])
    z = jnp.asarray([0.2, 0.6])
    mu = jnp.asarray([[-1.8, -1.7], [-1.9, -1.85], [-1.5, -1.4]])
    n = jnp.full((5, 3, 2), 10.0)
    return SelectionTable(cr=cr, core_radius=rc, z=z, trials=n, detected=n, c1=n * 0.5, mu=mu,
                          log_width=jnp.log(jnp.full((3, 2), 0.15)), logit_pmax=jnp.full((3, 2), 3.0),
                          point_cr=cr, point_trials=n[:, 0, 0], point_detected=n[:, 0, 0], point_c1=0 * n[:, 0, 0],
                          meta=json.dumps({"units": {"cr": "counts/s"}}))


TABLES = [_table()] + ([load_selection_table()] if SHIPPED.exists() else [])


@pytest.mark.parametrize("table", TABLES)
@settings(max_examples=30, deadline=None)
@given(st.floats(1.0, 120.0), st.floats(0.05, 1.0))
def test_selection_probability_is_a_probability_increasing_in_count_rate(table, rc, z):
    cr = jnp.geomspace(1e-4, 1.0, 60)
    p = np.asarray(selection_probability(table, cr, jnp.full(cr.shape, rc), jnp.full(cr.shape, z)))
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) >= -1e-12)
    assert float(selection_probability(table, 0.0, rc, z)) == 0.0


def test_selection_probability_gradient_matches_finite_differences():
    table = _table()
    f = lambda x: selection_probability(table, jnp.exp(x[0]), jnp.exp(x[1]), x[2])  # noqa: E731
    x = jnp.asarray([jnp.log(0.015), jnp.log(12.0), 0.35])
    g = np.asarray(jax.grad(f)(x))
    h = 1e-6
    fd = [(float(f(x.at[i].add(h))) - float(f(x.at[i].add(-h)))) / (2 * h) for i in range(3)]
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)
    assert g[0] > 0


def test_logistic_fit_recovers_the_curve():
    rng = np.random.default_rng(1)
    u = np.linspace(-2.6, -1.0, 9)
    n = np.full(u.shape, 400)
    p = 0.9 / (1 + np.exp(-(u - (-1.8)) / 0.12))
    k = rng.binomial(n, p)
    mu, lw, lp = fit_logistic(u, k, n)
    assert abs(mu + 1.8) < 0.03 and abs(np.exp(lw) - 0.12) < 0.03 and abs(1 / (1 + np.exp(-lp)) - 0.9) < 0.03


def test_table_round_trip_and_refusals(tmp_path):
    t = _table()
    path = tmp_path / "sel.npz"
    save_selection_table(t, path)
    r = load_selection_table(path)
    np.testing.assert_array_equal(np.asarray(r.mu), np.asarray(t.mu))
    assert r.settings["units"]["cr"] == "counts/s"
    np.savez(tmp_path / "bad.npz", cr=np.ones(3))
    with pytest.raises(ValueError, match="bad.npz"):
        load_selection_table(tmp_path / "bad.npz")


def test_shipped_table_records_its_provenance():
    if not SHIPPED.exists():
        pytest.skip("no shipped table")
    s = load_selection_table().settings
    for key in ("command", "n_real", "exposure_s", "nh_cm2", "git_commit", "units", "classes"):
        assert key in s


def test_soft_xod_with_selection_weight_is_differentiable():
    binning = XODBinning()
    rng = np.random.default_rng(0)
    cr = jnp.asarray(10 ** rng.uniform(-2.3, 0.2, 50))
    hr = jnp.asarray(10 ** rng.uniform(-0.8, 0.2, 50))
    z = jnp.asarray(rng.uniform(0.12, 0.48, 50))
    rc = jnp.asarray(rng.uniform(5.0, 60.0, 50))
    valid = jnp.ones(50, bool)
    table = _table()
    # weight 1 everywhere: the cut is not applied, so it equals the XOD with the cut below every edge
    ones = soft_xod(cr, hr, z, valid, binning, 0.02, 0.05, 0.02, selection_weight=jnp.ones(50))
    np.testing.assert_allclose(np.asarray(ones), np.asarray(soft_xod(cr, hr, z, valid, binning, 1e-6, 0.05, 0.02)))

    def total(scale):
        c = cr * scale
        w = selection_probability(table, c, rc, z)
        x = soft_xod(c, hr, z, valid, binning, 0.02, 0.05, 0.02, selection_weight=w)
        return jnp.sum(x * jnp.arange(x.size, dtype=x.dtype).reshape(x.shape))

    g = float(jax.grad(total)(1.0))
    h = 1e-5
    fd = (float(total(1.0 + h)) - float(total(1.0 - h))) / (2 * h)
    assert g != 0.0 and abs(g - fd) < 1e-5 * max(1.0, abs(fd))
    with pytest.raises(Exception, match="selection_weight"):  # jaxtyping (or the ValueError) names it
        soft_xod(cr, hr, z, valid, binning, 0.02, selection_weight=jnp.ones(3))
