"""Mass-map metrics on analytic cases: identical maps, scaled maps, independent fields, white noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.fields import massmaps as mm


def _blobs(key, n=8, size=32):
    """Positive cluster-like maps: a cored profile of random width plus small-scale structure."""
    k1, k2 = jax.random.split(key)
    r = mm.radial_distance((size, size))
    rs = jax.random.uniform(k1, (n, 1, 1), jnp.float32, 2.0, 6.0)
    noise = 0.05 * jax.random.normal(k2, (n, size, size), jnp.float32)
    return 1.0 / (1.0 + (r[None] / rs) ** 2) + 0.1 + noise**2


def test_identical_maps(getkey):
    x = _blobs(getkey())
    edges = jnp.asarray(np.arange(0, 17, 2), jnp.float32)

    @jax.jit  # one compilation instead of one per eager op
    def metrics(x):
        k, b = mm.bias_k(x, x)
        return (k, b, mm.cross_correlation_k(x, x)[1], mm.power_ratio(x, x)[1], mm.maximum_mean_discrepancy(x, x),
                mm.pixel_relative_difference(x, x), mm.radial_profile_fractional_error(x, x, edges),
                mm.radial_mass_bias(x, x, jnp.asarray([4.0, 8.0])), mm.total_mass_fractional_error(x, x))

    k, b, r, pr, mmd, d, prof, bias, mass = metrics(x)
    assert k.dtype == jnp.float32 and b.shape == (8, k.shape[0])
    np.testing.assert_allclose(b, 1.0, rtol=1e-5)
    np.testing.assert_allclose(r, 1.0, rtol=1e-5)
    np.testing.assert_allclose(pr, 0.0, atol=1e-5)
    assert float(mmd) == 0.0
    for zero in (d, prof, bias, mass):
        np.testing.assert_array_equal(zero, 0.0)


@pytest.mark.parametrize("a", [0.5, 1.3])
def test_scaled_map_known_bias(getkey, a):
    x = _blobs(getkey())
    edges = jnp.asarray(np.arange(0, 17, 2), jnp.float32)
    _, b = mm.bias_k(a * x, x)
    _, r = mm.cross_correlation_k(a * x, x)
    _, pr = mm.power_ratio(a * x, x)
    np.testing.assert_allclose(b, a, rtol=1e-5)  # b(k) = √(a² P / P)
    np.testing.assert_allclose(r, 1.0, rtol=1e-5)
    np.testing.assert_allclose(pr, a**2 - 1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mm.total_mass_fractional_error(a * x, x), a - 1, rtol=1e-5)
    np.testing.assert_allclose(mm.radial_mass_bias(a * x, x, jnp.asarray([3.0, 10.0])), a - 1, rtol=1e-5)
    np.testing.assert_allclose(mm.radial_profile_fractional_error(a * x, x, edges), a - 1, rtol=1e-5)
    np.testing.assert_allclose(mm.pixel_relative_difference(a * x, x, aperture=5.0), a - 1, rtol=1e-5)
    # the aperture keeps the pixels within 5 px of the centre: π 5² ≈ 78.5 of them (81 on this grid)
    assert mm.pixel_relative_difference(a * x, x, aperture=5.0).size == 8 * int(np.sum(np.asarray(mm.radial_distance((32, 32))) <= 5))


def test_independent_fields_uncorrelated(getkey):
    n, size = 64, 32
    x = jax.random.normal(getkey(), (n, size, size), jnp.float32)
    y = jax.random.normal(getkey(), (n, size, size), jnp.float32)
    k, r = mm.cross_correlation_k(x, y)
    # each bin's r from ~2π k/k_f independent modes × 64 maps: |mean r| ≲ 3/√(modes)
    r_mean = np.asarray(jnp.mean(r, axis=0))
    assert np.max(np.abs(r_mean)) < 0.1, r_mean
    k, r_self = mm.cross_correlation_k(x + 0.0 * y, x)
    np.testing.assert_allclose(r_self, 1.0, rtol=1e-5)


def test_white_noise_power_is_flat(getkey):
    """P(k) = σ² Δ² for white noise of variance σ² on pixels of side Δ (the FFT normalisation)."""
    sigma, delta = 2.0, 0.5
    x = sigma * jax.random.normal(getkey(), (64, 32, 32), jnp.float32)
    k, p = mm.power_spectrum_2d(x, pixel_size=delta)
    assert float(k[-1]) <= np.pi / delta
    np.testing.assert_allclose(jnp.mean(p, axis=0), sigma**2 * delta**2, rtol=0.1)


def test_radial_profile_matches_masks():
    """Annulus means against explicit numpy masks over the pixel lattice; a constant map stays constant."""
    size = 33
    yy, xx = np.mgrid[:size, :size]
    r_np = np.hypot(yy - 16.0, xx - 16.0)
    img = np.cos(0.3 * xx) + 0.01 * yy**2
    edges = np.arange(0.0, 15.0, 1.5)
    want = [img[(r_np >= lo) & (r_np < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])]
    prof = mm.azimuthal_profile(jnp.asarray(img, jnp.float32), jnp.asarray(edges, jnp.float32))
    np.testing.assert_allclose(prof, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mm.radial_distance((size, size)), r_np, rtol=1e-6)
    np.testing.assert_allclose(mm.azimuthal_profile(jnp.full((2, size, size), 3.0, jnp.float32), jnp.asarray(edges, jnp.float32)), 3.0, rtol=1e-6)


def test_standardised_errors_unit_scale(getkey):
    """Samples ~ N(truth, s²): ε = (mean − truth)/std ~ N(0, 1/n) per pixel."""
    n = 16
    truth = _blobs(getkey(), n=1)[0]
    samples = truth[None] + 0.3 * jax.random.normal(getkey(), (n, 32, 32), jnp.float32)
    eps = mm.standardised_pixel_errors(samples, truth)
    assert eps.shape == truth.shape
    assert abs(float(jnp.std(eps)) * np.sqrt(n) - 1.0) < 0.15
    assert abs(float(jnp.mean(eps))) < 0.05
    with pytest.raises(ValueError, match="n_sample >= 2"):
        mm.standardised_pixel_errors(samples[:1], truth)


def test_mmd_grows_with_shift(getkey):
    x = jax.random.normal(getkey(), (64, 16), jnp.float32)
    y = jax.random.normal(getkey(), (64, 16), jnp.float32)
    same = float(mm.maximum_mean_discrepancy(x, y, bandwidth=4.0, unbiased=True))
    shifted = [float(mm.maximum_mean_discrepancy(x, y + s, bandwidth=4.0)) for s in (0.5, 1.0)]
    assert abs(same) < 0.02
    assert 0.02 < shifted[0] < shifted[1]
    with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError in the tests, ValueError without
        mm.maximum_mean_discrepancy(x, y[:, :8])


def test_shape_errors():
    with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError in the tests, ValueError without
        mm.bias_k(jnp.ones((8, 8)), jnp.ones((8, 16)))
    with pytest.raises(ValueError, match="r_edges"):
        mm.azimuthal_profile(jnp.ones((8, 8)), jnp.ones((1,)))
