"""VE-SDE diffusion: SDE identities, samplers against an exact Gaussian score, the DSM loss falls."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.fields.diffusion import (
    NCSNpp,
    VESDE,
    GaussianScore,
    ScoreModel,
    diffrax_sde,
    dsm_loss,
    euler_maruyama,
    posterior_mean,
    predictor_corrector,
    probability_flow,
)
from jaxcluster.fields.training import FitConfig, fit


def test_vesde_identities():
    sde = VESDE(0.01, 50.0)
    t = jnp.linspace(0.05, 1.0, 7, dtype=jnp.float32)
    # d σ²/dt = g²: the marginal variance σ(t)² − σ_min² is the integral of g²
    dvar = jax.vmap(jax.grad(lambda s: sde.marginal_std(s) ** 2))(t)
    np.testing.assert_allclose(dvar, sde.diffusion(t) ** 2, rtol=1e-4)
    np.testing.assert_allclose(sde.sigma(jnp.float32(1.0)), 50.0, rtol=1e-6)
    assert float(sde.marginal_std(jnp.float32(0.0))) == 0.0
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(1.0, 0.5)


# Data x0 ~ N(μ, s²) per pixel: p_t = N(μ, s² + σ(t)² − σ_min²), whose score is exact (GaussianScore).
# σ_max = 50 ≫ s, |μ| so the N(0, σ_max²) prior matches p_1 (the start's mismatch reaches the output
# as μ s / σ_max ≈ 1 % of μ). 64 samples × 256 pixels: the pooled variance is known to √(2/16384) = 1.1 %.
@pytest.mark.parametrize(
    "sampler, kwargs",
    [(euler_maruyama, {"n_steps": 100}), (predictor_corrector, {"n_steps": 100}), (probability_flow, {}),
     (diffrax_sde, {"n_steps": 100})],
    ids=["euler_maruyama", "predictor_corrector", "probability_flow", "diffrax_sde"],
)
def test_sampler_reproduces_gaussian(getkey, sampler, kwargs):
    sde = VESDE(0.01, 50.0)
    shape = (1, 16, 16)
    mu = jnp.linspace(1.0, 3.0, 256, dtype=jnp.float32).reshape(shape)
    var = jnp.float32(0.25)
    score = GaussianScore(mu, var, sde)
    draw = eqx.filter_jit(jax.vmap(lambda k: sampler(score, sde, shape, key=k, **kwargs)))
    x = draw(jax.random.split(getkey(), 64))
    assert x.shape == (64, *shape) and x.dtype == jnp.float32
    mean_err = float(jnp.mean(jnp.mean(x, axis=0) - mu) / jnp.mean(mu))
    var_err = float(jnp.mean(jnp.var(x, axis=0, ddof=1)) / var - 1)
    assert abs(mean_err) < 0.05, mean_err
    assert abs(var_err) < 0.05, var_err
    # per pixel, the sample means scatter as s/√64 around μ (3σ bound on their rms)
    rms = float(jnp.sqrt(jnp.mean((jnp.mean(x, axis=0) - mu) ** 2)))
    assert rms < 3 * 0.5 / 8, rms


def _toy(key, n, size=8):
    c = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    rs = jax.random.uniform(key, (n, 1, 1), jnp.float32, 1.0, 3.0)
    m = 1.0 / (1.0 + r2[None] / rs**2)
    return jnp.stack([m**1.5, m**2], axis=1), m[:, None]


def test_dsm_loss_falls_and_posterior_mean(getkey):
    sde = VESDE(1e-2, 1.0)
    model = eqx.filter_jit(
        lambda k: ScoreModel(NCSNpp(1, 2, base_channels=4, channel_mult=(1,), n_res_blocks=1, key=k), sde)
    )(getkey())
    cond, x0 = _toy(getkey(), 24)
    out = eqx.filter_jit(lambda m: m(x0[0], jnp.float32(0.3), cond[0]))(model)
    assert out.shape == (1, 8, 8) and out.dtype == jnp.float32

    def loss(m, b, k):
        return dsm_loss(m, b[1], b[0], key=k)

    valid = (cond[16:], x0[16:])
    res = fit(model, loss, (cond[:16], x0[:16]), valid,
              FitConfig(max_steps=30, batch_size=8, learning_rate=1e-2, eval_every=10, patience=100))
    before = float(eqx.filter_jit(loss)(model, valid, jax.random.fold_in(jax.random.key(0), 2**31 - 1)))
    # a zero output scores exactly 1; the fit must learn the noise direction
    assert res.valid_loss[-1] < 0.7 * before, (before, res.valid_loss)
    mean, std = eqx.filter_jit(lambda m, c, k: posterior_mean(m, c, key=k, n_samples=2, sampler=euler_maruyama,
                                                              n_steps=2))(res.model, cond[20], getkey())
    assert mean.shape == std.shape == (1, 8, 8)
    assert bool(jnp.all(jnp.isfinite(mean))) and float(jnp.mean(std)) > 0
