"""Multi-view U-Net: shapes, dtypes, missing views, the L1 loss falls, checkpoints resume exactly."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.fields.training import FitConfig, fit
from jaxcluster.fields.unet import MultiViewUNet, random_view_mask, unet_loss


def make_net(key, **kw):
    """Built under one jit: eager initialisation compiles one random draw per weight shape (seconds)."""
    return eqx.filter_jit(lambda k: MultiViewUNet(**{"n_views": 2, "out_channels": 1, "base_channels": 4, "depth": 1, **kw}, key=k))(key)


def toy_clusters(key, n, size=8):
    """Cored mass profiles of random width; SZ ∝ m^1.5, X-ray ∝ m² (a known map → mass relation)."""
    c = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    rs = jax.random.uniform(key, (n, 1, 1), jnp.float32, 1.0, 3.0)
    m = 1.0 / (1.0 + r2[None] / rs**2)
    return jnp.stack([m**1.5, m**2], axis=1), m[:, None]


def test_shapes_dtypes_and_missing_views(getkey):
    net = make_net(getkey())
    views, _ = toy_clusters(getkey(), 2)
    apply = eqx.filter_jit(lambda m, v, mask: m(v, mask))
    both, sz_only = jnp.array([True, True]), jnp.array([True, False])
    out = apply(net, views[0], both)
    assert out.shape == (1, 8, 8) and out.dtype == jnp.float32
    # a missing view's content is ignored, NaN included
    a = apply(net, views[0], sz_only)
    b = apply(net, views[0].at[1].set(jnp.nan), sz_only)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, out)  # the mask changes the prediction
    with pytest.raises(ValueError, match="divisible"):
        apply(net, jnp.ones((2, 7, 7), jnp.float32), both)
    with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError under pytest, else ValueError
        apply(net, jnp.ones((3, 8, 8), jnp.float32), both)
    with pytest.raises(Exception, match="at least one view"):
        apply(net, views[0], jnp.array([False, False]))


def test_random_view_mask_never_empty(getkey):
    masks = jax.vmap(lambda k: random_view_mask(2, key=k, p_keep=0.2))(jax.random.split(getkey(), 256))
    assert bool(jnp.all(jnp.any(masks, axis=1)))
    assert 0 < float(jnp.mean(masks.all(axis=1))) < 0.2  # both kept: p² = 0.04 of draws


def test_l1_loss_falls_and_checkpoint_resumes(getkey, tmp_path):
    views, target = toy_clusters(getkey(), 24)
    net = make_net(getkey())
    data, valid = (views[:16], target[:16]), (views[16:], target[16:])

    def loss(m, b, k):
        return unet_loss(m, b[0], b[1], key=k)

    config = FitConfig(max_steps=40, batch_size=8, learning_rate=1e-2, eval_every=4, patience=100)
    before = float(eqx.filter_jit(unet_loss)(net, *valid))
    full = fit(net, loss, data, valid, config)
    assert full.valid_loss[-1] < 0.5 * before, (before, full.valid_loss)
    # killed after 20 steps, resumed to 40: the same best model as the uninterrupted run
    ckpt = tmp_path / "unet.eqx"
    fit(net, loss, data, valid, FitConfig(**{**config.__dict__, "max_steps": 20}), checkpoint=ckpt)
    resumed = fit(net, loss, data, valid, config, checkpoint=ckpt)
    assert resumed.steps == 40
    np.testing.assert_allclose(resumed.valid_loss, full.valid_loss, rtol=1e-4)
    leaves = zip(jax.tree.leaves(eqx.filter(resumed.model, eqx.is_array)), jax.tree.leaves(eqx.filter(full.model, eqx.is_array)))
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_checkpoint_refuses_other_settings_model_or_data(getkey, tmp_path):
    views, target = toy_clusters(getkey(), 12)
    net = make_net(getkey())
    data, valid = (views[:8], target[:8]), (views[8:], target[8:])

    def loss(m, b, k):
        return unet_loss(m, b[0], b[1], key=k)

    config = FitConfig(max_steps=2, batch_size=4, learning_rate=1e-2, eval_every=1, patience=100)
    ckpt = tmp_path / "unet.eqx"
    fit(net, loss, data, valid, config, checkpoint=ckpt)
    with pytest.raises(ValueError, match="config.learning_rate"):
        fit(net, loss, data, valid, FitConfig(**{**config.__dict__, "learning_rate": 1e-3}), checkpoint=ckpt)
    with pytest.raises(ValueError, match="train"):
        fit(net, loss, (views[:8] + 1.0, target[:8]), valid, config, checkpoint=ckpt)
    with pytest.raises(ValueError, match="model"):
        fit(make_net(getkey()), loss, data, valid, config, checkpoint=ckpt)
    # raising max_steps is a resume, not a change of settings
    assert fit(net, loss, data, valid, FitConfig(**{**config.__dict__, "max_steps": 3}), checkpoint=ckpt).steps == 3
