"""Validation figures of seed 001 §3: power-law deviations and cluster count-rate sums."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.baryons.validation import cluster_count_rates, cluster_deviations, power_law_deviations, voxel_deviations


def test_power_law_fits_recover_slopes_and_deviation_correlation():
    rng = np.random.default_rng(0)
    x = 10 ** rng.uniform(13, 14.5, 4000)
    shared = rng.normal(0, 0.1, x.size)  # deviations the prediction knows
    own_t, own_p = rng.normal(0, 0.05, x.size), rng.normal(0, 0.05, x.size)
    y_true = 10 ** (-3 + 1.6 * np.log10(x / 1e14) + shared + own_t)
    y_pred = 10 ** (-2.8 + 1.4 * np.log10(x / 1e14) + shared + own_p)
    stats, dt, dp = power_law_deviations(x, y_true, y_pred, pivot=1e14)
    assert stats.slope_true == pytest.approx(1.6, abs=0.02)
    assert stats.slope_pred == pytest.approx(1.4, abs=0.02)
    assert stats.norm_true == pytest.approx(-3.0, abs=0.01)
    assert stats.norm_pred == pytest.approx(-2.8, abs=0.01)
    # corr = var(shared) / (var(shared) + var(own)) = 0.01 / 0.0125
    assert stats.dev_corr == pytest.approx(0.8, abs=0.02)
    assert stats.scatter_true == pytest.approx(np.hypot(0.1, 0.05), rel=0.05)
    assert dt.shape == dp.shape == (x.size,)
    # the per-object error is the raw log ratio, not relative to the fits
    err = np.log10(y_pred / y_true)
    assert stats.err_dex_mean == pytest.approx(err.mean()) and stats.err_dex_std == pytest.approx(err.std())


def test_bad_points_are_dropped_and_too_few_raise():
    x = np.array([1.0, 2.0, 3.0, 4.0, -1.0, np.nan])
    y = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 1.0])
    stats, _, _ = power_law_deviations(x, y, 2 * y)
    assert stats.n == 4 and stats.slope_true == pytest.approx(1.0)
    assert stats.err_dex_mean == pytest.approx(np.log10(2.0))
    with pytest.raises(ValueError, match="≥ 3 points"):
        power_law_deviations(x[:2], y[:2], y[:2])
    with pytest.raises(ValueError, match="one shape"):
        power_law_deviations(x, y, y[:3])


def test_voxel_relation_uses_collapsed_voxels_only():
    rng = np.random.default_rng(1)
    rho = 10 ** rng.uniform(0, 4, (16, 16, 16))
    n_t = rho**0.9 * 10 ** rng.normal(0, 0.1, rho.shape)
    stats, _, _ = voxel_deviations(rho, n_t, n_t, rho_min=200.0)
    assert stats.n == int((rho >= 200).sum())
    assert stats.dev_corr == pytest.approx(1.0) and stats.slope_true == pytest.approx(0.9, abs=0.05)


def _brute_force(cr, centre, radius, box):
    n = cr.shape[0]
    x = (np.arange(n) + 0.5) * box / n
    d = [np.minimum(np.abs(x - c), box - np.abs(x - c)) for c in centre]
    r2 = d[0][:, None, None] ** 2 + d[1][None, :, None] ** 2 + d[2][None, None, :] ** 2
    return cr[r2 <= radius**2].sum()


@settings(max_examples=10, deadline=None)
@given(centre=st.tuples(*(st.floats(0.0, 10.0),) * 3), radius=st.floats(0.3, 3.0))
def test_sphere_sums_match_brute_force_across_the_periodic_boundary(centre, radius):
    box = 10.0
    cr = np.random.default_rng(2).random((20, 20, 20))
    got = cluster_count_rates(jnp.asarray(cr), jnp.asarray([centre]), jnp.asarray([radius]), jnp.asarray([box] * 3))
    assert float(got[0]) == pytest.approx(_brute_force(cr, centre, radius, box), rel=1e-5)


def test_cluster_deviations_select_valid_entries():
    M = np.array([1e13, 2e13, 4e13, 8e13, 1.6e14, 5e12])
    cr = (M / 1e14) ** 1.5
    stats, _, _ = cluster_deviations(M, cr, cr, valid=M >= 1e13)
    assert stats.n == 5 and stats.slope_true == pytest.approx(1.5) and stats.err_dex_std == pytest.approx(0.0, abs=1e-12)
