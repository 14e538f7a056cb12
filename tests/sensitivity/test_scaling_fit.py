"""The CR–M fit recovers a relation injected into mock catalogues; its errors and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.sensitivity import ScalingBoxConfig, bootstrap_fit, fit_scaling_relation

A, B, SIG, PIV = -1.3, 1.6, 0.18, 14.0


def _mock(rng, n):
    lm = rng.uniform(13.3, 15.0, size=n)
    lc = A + B * (lm - PIV) + SIG * rng.normal(size=n)
    return lm, lc


def test_fit_recovers_injected_relation_with_calibrated_errors():
    rng = np.random.default_rng(0)
    xs, ys = map(np.array, zip(*(_mock(rng, 300) for _ in range(200))))
    fits = jax.vmap(lambda x, y: fit_scaling_relation(x, y, log10_pivot=PIV))(jnp.asarray(xs), jnp.asarray(ys))
    p = np.stack([np.asarray(fits.norm), np.asarray(fits.slope), np.asarray(fits.scatter)], axis=1)
    e = np.sqrt(np.asarray(jnp.diagonal(fits.cov, axis1=-2, axis2=-1)))
    truth = np.array([A, B, SIG])
    # mean over 200 mocks within 4 standard errors of the mean; σ̂ (ML) biased by √((N−2)/N)
    expect = truth * np.array([1.0, 1.0, np.sqrt(298 / 300)])
    assert np.all(np.abs(p.mean(0) - expect) < 4 * p.std(0) / np.sqrt(200))
    # Hessian errors match the spread of the fits (±15 %: the sd of 200 values is known to ~5 %)
    np.testing.assert_allclose(e.mean(0), p.std(0), rtol=0.15)


def test_hessian_covariance_equals_inverse_hessian_of_likelihood():
    rng = np.random.default_rng(1)
    x, y = map(jnp.asarray, _mock(rng, 150))
    fit = fit_scaling_relation(x, y, log10_pivot=PIV)

    def nll(q):
        a, b, s = q
        r = y - a - b * (x - PIV)
        return jnp.sum(0.5 * r**2 / s**2 + jnp.log(s))

    H, g = jax.jit(lambda q: (jax.hessian(nll)(q), jax.grad(nll)(q)))(fit.params)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-8)  # at the maximum
    np.testing.assert_allclose(np.asarray(fit.cov), np.linalg.inv(np.asarray(H)), rtol=1e-8, atol=1e-14)


def test_weights_exclude_slots_and_bootstrap_agrees():
    rng = np.random.default_rng(2)
    x, y = _mock(rng, 400)
    w = np.ones(400)
    w[300:] = 0.0
    y_bad = y.copy()
    y_bad[300:] = 1e3  # garbage in weight-0 slots
    fit = jax.jit(fit_scaling_relation)
    f1 = fit(jnp.asarray(x), jnp.asarray(y_bad), jnp.asarray(w), PIV)
    f2 = fit(jnp.asarray(x[:300]), jnp.asarray(y[:300]), jnp.ones(300), PIV)
    np.testing.assert_allclose(np.asarray(f1.params), np.asarray(f2.params), rtol=1e-12)
    boot_fn = jax.jit(lambda a, b, c, k: bootstrap_fit(a, b, c, PIV, key=k, n_boot=300))
    boot = np.asarray(boot_fn(jnp.asarray(x), jnp.asarray(y_bad), jnp.asarray(w), jax.random.key(0)))
    np.testing.assert_allclose(boot.std(0), np.asarray(f2.errors), rtol=0.2)


def test_fit_gradient_matches_finite_differences():
    """∂(A, B, σ)/∂(shift of the brightest clusters' CR): autodiff of the closed form vs central differences."""
    rng = np.random.default_rng(3)
    x, y = map(jnp.asarray, _mock(rng, 60))
    w = jax.nn.sigmoid((x - 13.6) / 0.05)  # soft mass cut, as for the simulated clusters
    direction = jnp.where(x > 14.5, 1.0, 0.0)

    def f(t):
        return fit_scaling_relation(x, y + t * direction, w, PIV).params

    g = jax.jit(jax.jacfwd(f))(0.0)
    h = 1e-5
    fd = jax.jit(lambda h: (f(h) - f(-h)) / (2 * h))(h)
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-6, atol=1e-9)
    assert float(g[1]) > 0  # brighter massive clusters steepen the slope


def test_scaling_box_config_names_bad_values():
    for kwargs, name in [(dict(cell_size=0.0), "cell_size"), (dict(z=-0.1), "z"), (dict(threshold=0.0), "threshold"),
                         (dict(box_size=(64.0, 64.0, 31.5)), "box_size"), (dict(n_steps=0), "n_steps")]:
        with pytest.raises(ValueError, match=name):
            ScalingBoxConfig(**kwargs)
    assert ScalingBoxConfig().shape == (64, 64, 32)
