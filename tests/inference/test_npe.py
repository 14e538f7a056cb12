"""Neural posteriors: normalisation and no prior leakage, a known Gaussian posterior, ensembles, save/load."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.inference import (
    NeuralPosterior,
    ParameterSpace,
    TrainConfig,
    build_posterior,
    load_posterior,
    save_posterior,
    train_posterior,
)

LO, HI = np.array([0.0, -1.0]), np.array([1.0, 2.0])


def _random_posterior(kind: str, key) -> NeuralPosterior:
    """An untrained posterior made far from trivial (large conditioner/head weights, skewed scaling)."""
    space = ParameterSpace(LO, HI, shift=np.array([0.3, -0.2]), scale=np.array([1.3, 0.8]))
    cfg = TrainConfig(estimator=kind, n_components=3, width=16, n_layers=2, n_bins=4)
    post = build_posterior(cfg, space, np.zeros(3), np.ones(3), key=key)
    # undo the near-identity initialisation: what is tested must hold for any weights
    return eqx.tree_at(lambda p: p.estimator, post,
                       jax.tree.map(lambda a: 3.0 * a if eqx.is_inexact_array(a) else a, post.estimator))


@pytest.mark.parametrize("kind", ["mdn", "flow"])
def test_log_prob_normalised_on_the_prior_box(kind, getkey):
    post = _random_posterior(kind, getkey())
    x = jnp.array([0.5, -1.0, 2.0], jnp.float32)
    n = 200   # midpoint rule: the density vanishes smoothly at the walls (logit Jacobian), error ~ 1/n²
    gx = (np.arange(n) + 0.5) / n
    t0 = LO[0] + (HI[0] - LO[0]) * gx
    t1 = LO[1] + (HI[1] - LO[1]) * gx
    grid = np.stack(np.meshgrid(t0, t1, indexing="ij"), -1).reshape(-1, 2)
    outside = np.array([[-0.01, 0.5], [0.5, 2.01], [1.5, -3.0]])
    pts = jnp.asarray(np.concatenate([grid, outside]), jnp.float32)
    lp = np.asarray(jax.jit(jax.vmap(post.log_prob, in_axes=(0, None)))(pts, x), np.float64)
    integral = np.sum(np.exp(lp[: n * n])) * np.prod(HI - LO) / n**2
    assert abs(integral - 1.0) < 0.02, integral
    assert np.all(np.isneginf(lp[n * n:]))
    th = post.sample(getkey(), x, 2000)
    th = np.asarray(th)
    assert th.shape == (2000, 2) and np.all((th > LO) & (th < HI))


def test_parameter_space_log_jacobian(getkey):
    space = ParameterSpace(np.array([0.1, -np.inf]), np.array([0.5, np.inf]), shift=np.array([0.2, 1.0]),
                           scale=np.array([1.5, 2.0]))
    theta = jnp.array([0.23, 3.0], jnp.float32)
    np.testing.assert_allclose(space.from_u(space.to_u(theta)), theta, rtol=1e-5)
    jac = jax.jacfwd(space.to_u)(theta)
    np.testing.assert_allclose(space.log_abs_det_du_dtheta(theta), np.log(abs(np.linalg.det(jac))), rtol=1e-5)
    with pytest.raises(ValueError, match="both bounds"):
        ParameterSpace(np.array([0.0, -np.inf]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="estimator"):
        TrainConfig(estimator="maf")


# Linear-Gaussian toy: θ ~ U(box), x = A θ + σ ε. Away from the walls the
# posterior is N(A⁻¹x, σ² (AᵀA)⁻¹) (the truncation is > 4σ away).
A = np.array([[1.0, 0.5], [-0.3, 1.0]])
NOISE = 0.25
BOX = (np.array([-2.0, -2.0]), np.array([2.0, 2.0]))


@pytest.fixture(scope="module")
def trained():
    key = jax.random.key(3)
    k1, k2, k3 = jax.random.split(key, 3)
    n = 6000
    theta = np.asarray(jax.random.uniform(k1, (n, 2), jnp.float64, -2.0, 2.0))
    x = theta @ A.T + NOISE * np.asarray(jax.random.normal(k2, (n, 2), jnp.float64))
    cfg = TrainConfig(n_members=2, max_epochs=150, patience=20, batch_size=100)
    post, hist = train_posterior(theta, x, *BOX, cfg, key=k3, names=("a", "b"))
    return post, hist, cfg


def test_mdn_recovers_linear_gaussian_posterior(trained, getkey):
    post, hist, _ = trained
    # training lowers the validation loss of both members
    val = np.asarray(hist["val_loss"])
    assert np.all(val.min(0) < val[0] - 0.5)
    theta0 = np.array([0.4, -0.3])
    x0 = A @ theta0
    mean = np.linalg.solve(A, x0)
    cov = NOISE**2 * np.linalg.inv(A.T @ A)
    s = np.asarray(post.sample(getkey(), jnp.asarray(x0, jnp.float32), 20000), np.float64)
    sd = np.sqrt(np.diag(cov))
    # Tolerances: the amortised fit's own error with 5400 training pairs and early stopping
    # (0.1-0.2 σ in the mean, a few % in the width, seen across test points and seeds);
    # the Monte Carlo error of 2·10⁴ draws is < 0.01 σ. A wrong scale, a swapped or
    # unstandardised parameter, or a missing component misses these by far.
    assert np.all(np.abs(s.mean(0) - mean) < 0.3 * sd), ((s.mean(0) - mean) / sd)
    np.testing.assert_allclose(s.std(0), sd, rtol=0.12)
    corr = np.corrcoef(s.T)[0, 1]
    # exact −0.17; the fit's own error is up to 0.09 (it moves with the float round-off of training,
    # e.g. XLA's optimisation level); a posterior without the correlation misses by 0.17
    assert abs(corr - cov[0, 1] / (sd[0] * sd[1])) < 0.11, corr
    mi = post.marginal_intervals(getkey(), jnp.asarray(x0, jnp.float32), n=20000)
    np.testing.assert_allclose(mi["upper"] - mi["lower"], 2 * 0.9945 * sd, rtol=0.12)


def test_ensemble_is_the_mixture_of_its_members(trained):
    post, _, _ = trained
    assert post.n_members == 2
    members = [eqx.tree_at(lambda p: p.estimator, post, jax.tree.map(
        lambda a: a[i:i + 1] if eqx.is_array(a) else a, post.estimator)) for i in range(2)]
    theta = jnp.array([0.1, 0.2], jnp.float32)
    x = jnp.array([0.3, 0.1], jnp.float32)
    lps = [float(m.log_prob(theta, x)) for m in members]
    assert lps[0] != lps[1]   # independently initialised and shuffled
    expect = np.logaddexp(*lps) - math.log(2)
    np.testing.assert_allclose(float(post.log_prob(theta, x)), expect, rtol=1e-5)


def test_save_load_round_trip(trained, tmp_path, getkey):
    post, _, cfg = trained
    save_posterior(tmp_path / "post", post, cfg)
    loaded, cfg2 = load_posterior(tmp_path / "post.eqx")
    assert cfg2 == cfg and loaded.names == ("a", "b")
    theta = jnp.array([0.1, 0.2], jnp.float32)
    x = jnp.array([0.3, 0.1], jnp.float32)
    assert float(loaded.log_prob(theta, x)) == float(post.log_prob(theta, x))
    k = getkey()
    # n = 20000 as in the recovery test: the compiled sampler is reused
    np.testing.assert_array_equal(loaded.sample(k, x, 20000), post.sample(k, x, 20000))
    with pytest.raises(ValueError, match="no saved posterior"):
        load_posterior(tmp_path / "absent")


def test_training_input_errors(getkey):
    theta = np.zeros((300, 2))
    with pytest.raises(ValueError, match="inside its prior box"):
        train_posterior(theta + 5.0, np.zeros((300, 3)), *BOX, key=getkey())
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_posterior(theta[:100], np.zeros((100, 3)), *BOX, key=getkey())


def test_sequential_round_refines_the_amortised_posterior(trained, getkey):
    """`init=`: a round on a truncated prior (TSNPE) starts from the amortised weights and sharpens q(θ | x0)."""
    post, hist, cfg = trained
    theta0 = np.array([0.4, -0.3])
    x0 = A @ theta0
    mean = np.linalg.solve(A, x0)
    sd = NOISE * np.sqrt(np.diag(np.linalg.inv(A.T @ A)))
    # truncated prior: the box within 5 σ of the posterior mean (holds all but ~1e-6 of its mass)
    n = 2000
    lo_t, hi_t = mean - 5 * sd, mean + 5 * sd
    theta = np.asarray(jax.random.uniform(getkey(), (n, 2), jnp.float64)) * (hi_t - lo_t) + lo_t
    x = theta @ A.T + NOISE * np.asarray(jax.random.normal(getkey(), (n, 2), jnp.float64))
    k = getkey()
    refined, h2 = train_posterior(theta, x, *BOX, cfg, key=k, names=("a", "b"), init=post)
    _, fresh = train_posterior(theta, x, *BOX, dataclasses.replace(cfg, max_epochs=1), key=k, names=("a", "b"))
    # it really continues: its first epoch is already far better than a fresh network's
    assert np.all(np.asarray(h2["val_loss"])[0] < np.asarray(fresh["val_loss"])[0] - 1.0)
    s = np.asarray(refined.sample(getkey(), jnp.asarray(x0, jnp.float32), 20000), np.float64)
    assert np.all(np.abs(s.mean(0) - mean) < 0.15 * sd), ((s.mean(0) - mean) / sd)
    np.testing.assert_allclose(s.std(0), sd, rtol=0.08)
    with pytest.raises(ValueError, match="init must be"):
        train_posterior(theta, x, *BOX, dataclasses.replace(cfg, n_members=1), key=k, init=post)
    with pytest.raises(ValueError, match="prior box"):
        train_posterior(theta, x, BOX[0] - 1.0, BOX[1], cfg, key=k, init=post)
