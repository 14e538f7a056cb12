"""NFW helpers against independent root finding and sampling statistics."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from jaxcluster.halos import concentration_duffy08, nfw_enclosed_fraction, nfw_mu, nfw_radius_ratio, sample_nfw_positions


@pytest.mark.parametrize("c", [2.0, 4.0, 7.5, 15.0])
@pytest.mark.parametrize("delta_ratio", [2.5, 0.5])
def test_radius_ratio_matches_brentq(c, delta_ratio):
    mu = lambda y: math.log1p(y) - y / (1 + y)
    ref = optimize.brentq(lambda x: mu(c * x) / mu(c) - delta_ratio * x**3, 1e-3, 10.0, xtol=1e-14)
    assert float(nfw_radius_ratio(jnp.asarray(c), delta_ratio)) == pytest.approx(ref, rel=1e-9)


def test_radius_ratio_at_200_is_one():
    assert np.allclose(nfw_radius_ratio(jnp.asarray([3.0, 9.0]), 1.0), 1.0, rtol=1e-9)


def test_mu_series_at_small_y():
    y = 1e-3
    assert float(nfw_mu(jnp.asarray(y))) == pytest.approx(y**2 / 2 - 2 * y**3 / 3, rel=1e-5)


def test_duffy08_pivot_and_slopes():
    assert float(concentration_duffy08(2e12, 0.0)) == pytest.approx(5.71)
    assert float(concentration_duffy08(2e13, 0.0) / concentration_duffy08(2e12, 0.0)) == pytest.approx(10**-0.084)
    assert float(concentration_duffy08(2e12, 1.0) / concentration_duffy08(2e12, 0.0)) == pytest.approx(2**-0.47)


def test_sampled_radii_follow_the_enclosed_mass(getkey):
    c, R, x_max = 5.0, 0.8, 2.0
    pos = sample_nfw_positions(getkey(), 20000, c, R, x_max=x_max)
    x = np.linalg.norm(np.asarray(pos), axis=-1) / R
    cdf = lambda xx: np.asarray(nfw_enclosed_fraction(jnp.asarray(np.minimum(xx, x_max)), c)) / float(nfw_enclosed_fraction(x_max, c))
    assert x.max() <= x_max * (1 + 1e-9)
    assert stats.kstest(x, cdf).pvalue > 1e-3
    # Isotropy: the mean direction vanishes to sampling noise.
    u = np.asarray(pos) / np.linalg.norm(np.asarray(pos), axis=-1, keepdims=True)
    assert np.all(np.abs(u.mean(0)) < 5 / math.sqrt(len(u)))
