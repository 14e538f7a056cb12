"""ResNet compressor: shapes, normaliser, training on tiny data, checkpoint resume, a calibrated NLL head."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.inference.compressor import (
    Normaliser,
    ResNetCompressor,
    compressor_loss,
    load_compressor,
    save_compressor,
    train_compressor,
)

SHAPE = (4, 3, 2)  # (n_cr, n_hr, n_z)
TINY = dict(width=4, hidden=16, n_blocks=1, progress=False)  # test_network_shapes checks the 4-block default


def _toy_set(n, seed=0):
    """XOD counts whose intensity depends on θ (2,): Poisson(exp(a θ₀ + b θ₁))."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(size=(n, 2))
    a = np.linspace(0.5, 3.0, 24).reshape(SHAPE)
    lam = np.exp(a[None] * theta[:, :1, None, None] + 2.0 * theta[:, 1:, None, None] + 0.5)
    return rng.poisson(lam).astype(np.float32), theta


@pytest.mark.parametrize("head, n_out", [("mse", 3), ("gaussian", 6), ("gaussian_full", 9)])
def test_network_shapes_and_loss(head, n_out, getkey):
    net = ResNetCompressor(SHAPE, 3, head, width=4, hidden=8, key=getkey())
    assert len(net.blocks) == 4 and all(len(b.convs) == 3 for b in net.blocks)
    assert len(net.mlp.layers) == 3
    x = jax.random.uniform(getkey(), (5, *SHAPE), jnp.float32)
    y = jax.random.uniform(getkey(), (5, 3), jnp.float32)
    out, loss = eqx.filter_jit(lambda n, x, y: (jax.vmap(n)(x), compressor_loss(n, x, y)))(net, x, y)
    assert out.shape == (5, n_out) and out.dtype == jnp.float32
    if head == "mse":
        ref = jnp.mean(jnp.sum((y - out) ** 2, axis=-1))
    elif head == "gaussian":
        var = jax.nn.softplus(out[:, 3:]) + 1e-6
        ref = jnp.mean(0.5 * jnp.sum((y - out[:, :3]) ** 2 / var + jnp.log(var), axis=-1))
    else:  # −ln N(y; μ, (L Lᵀ)⁻¹) up to the constant, from the covariance itself
        rows, cols = np.tril_indices(3)
        refs = []
        for o, t in zip(np.asarray(out, np.float64), np.asarray(y, np.float64)):
            L = np.zeros((3, 3))
            L[rows, cols] = o[3:]
            L[np.diag_indices(3)] = np.log1p(np.exp(np.diag(L))) + 1e-3
            cov = np.linalg.inv(L @ L.T)
            r = t - o[:3]
            refs.append(0.5 * r @ np.linalg.solve(cov, r) + 0.5 * np.linalg.slogdet(cov)[1])
        ref = np.mean(refs)
    np.testing.assert_allclose(loss, ref, rtol=2e-4)
    with pytest.raises(ValueError, match="head"):
        ResNetCompressor(SHAPE, 3, "l1", key=getkey())


def test_normaliser_round_trip():
    x, theta = _toy_set(50)
    nx = Normaliser.fit(x, log1p=True)
    y = nx(x)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 + 1e-6
    np.testing.assert_allclose(nx.inverse(y), x, rtol=1e-4, atol=1e-3)
    nt = Normaliser.fit(theta)
    np.testing.assert_allclose(nt.inverse(nt(theta)), theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nt(theta).min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(nt(theta).max(axis=0), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="log1p"):
        Normaliser.fit(-x, log1p=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, theta = _toy_set(320)
    ckpt = tmp_path_factory.mktemp("ckpt") / "mse.ckpt"
    res = train_compressor(x, theta, key=jax.random.key(1), head="mse", batch_size=32, max_epochs=6,
                           patience=50, checkpoint=ckpt, **TINY)
    return x, theta, ckpt, res


def test_loss_falls_on_tiny_data(trained):
    _, _, _, res = trained
    tl = res.history["train_loss"]
    assert len(tl) == 6 and tl[-1] < 0.5 * tl[0]
    assert min(res.history["val_loss"]) < 0.5 * res.history["val_loss"][0]


def test_checkpoint_resume_matches_uninterrupted(trained, tmp_path):
    x, theta, _, res = trained
    ckpt = tmp_path / "part.ckpt"
    train_compressor(x, theta, key=jax.random.key(1), head="mse", batch_size=32, max_epochs=3, patience=50,
                     checkpoint=ckpt, **TINY)  # "killed" after 3 epochs
    resumed = train_compressor(x, theta, key=jax.random.key(1), head="mse", batch_size=32, max_epochs=6,
                               patience=50, checkpoint=ckpt, **TINY)
    assert resumed.history["val_loss"] == res.history["val_loss"]
    a = jax.tree_util.tree_leaves(resumed.compressor)
    b = jax.tree_util.tree_leaves(res.compressor)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="other settings"):
        train_compressor(x, theta, key=jax.random.key(1), head="mse", batch_size=16, max_epochs=6, patience=50,
                         checkpoint=ckpt, **TINY)


def test_save_load(trained, tmp_path):
    x, _, _, res = trained
    save_compressor(tmp_path / "c.eqx", res.compressor)
    back = load_compressor(tmp_path / "c.eqx")
    np.testing.assert_array_equal(back.summary(x[0]), res.compressor.summary(x[0]))
    mean, cov = back.predict(x[0])
    assert mean.shape == (2,) and cov is None


def test_gaussian_nll_head_is_calibrated():
    """Linear-Gaussian toy: x = θ + σ(θ) ε in every pixel, σ(θ) = 0.05 + 0.25 θ (heteroscedastic).

    The posterior of θ is close to N(x̄, σ(θ)²/n_pix), so the NLL head must predict variances
    matching the residual variance of its mean, overall and separately in the low- and
    high-noise halves (a factor of ~2 apart in σ).
    """
    rng = np.random.default_rng(3)
    n, shape = 3000, (2, 2, 1)
    theta = rng.uniform(size=(n, 1))
    sig = 0.05 + 0.25 * theta
    x = (theta[:, :, None, None] + sig[:, :, None, None] * rng.normal(size=(n, *shape))) * 50.0 + 100.0
    res = train_compressor(x, theta, key=jax.random.key(2), head="gaussian", batch_size=100, max_epochs=40,
                           patience=100, learning_rate=3e-3, width=4, hidden=16, n_blocks=1, progress=False)
    xt_theta = rng.uniform(size=(2000, 1))
    st = 0.05 + 0.25 * xt_theta
    xt = (xt_theta[:, :, None, None] + st[:, :, None, None] * rng.normal(size=(2000, *shape))) * 50.0 + 100.0
    mean, cov = jax.vmap(res.compressor.predict)(jnp.asarray(xt, jnp.float32))
    r2 = (np.asarray(mean)[:, 0] - xt_theta[:, 0]) ** 2
    var = np.asarray(cov)[:, 0, 0]
    assert 0.75 < np.mean(r2) / np.mean(var) < 1.33
    lo, hi = xt_theta[:, 0] < 0.5, xt_theta[:, 0] >= 0.5
    for m in (lo, hi):
        assert 0.7 < np.mean(r2[m]) / np.mean(var[m]) < 1.4
    # it tracks the noise level (the exact posterior ratio is ~4 untruncated, less once the
    # prior edge at θ = 1 cuts the widest posteriors)
    assert np.mean(var[hi]) > 1.5 * np.mean(var[lo])
