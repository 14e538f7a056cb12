"""eLDL losses (seed 001 eqs. 5–6): smoothing operator, zeros, masks, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.baryons import T_loss, n_e_loss, slab_mask, smooth

BOX = (20.0, 20.0, 20.0)
SHAPE = (16, 16, 16)


def test_smoothing_operator_on_plane_waves():
    x = np.arange(16) * 20.0 / 16
    for m in (1, 3):
        k = 2 * math.pi * m / 20.0
        wave = jnp.asarray(np.cos(k * x)[:, None, None] * np.ones(SHAPE))
        assert np.allclose(np.asarray(smooth(wave, BOX)), (1 + 1 / k) * np.asarray(wave), atol=1e-12)
        assert np.allclose(np.asarray(smooth(wave, BOX, n=2.0)), (1 + k**-2) * np.asarray(wave), atol=1e-12)
    const = jnp.full(SHAPE, 3.0)
    assert np.allclose(np.asarray(smooth(const, BOX)), 3.0)  # the k = 0 mode passes once


def test_losses_vanish_at_the_truth_and_are_positive_elsewhere(getkey):
    n = jnp.exp(jax.random.normal(getkey(), SHAPE))
    T = jnp.exp(jax.random.normal(getkey(), SHAPE))
    rho = jnp.exp(jax.random.normal(getkey(), SHAPE))
    assert float(n_e_loss(n, n, T, rho, BOX)) == pytest.approx(0.0, abs=1e-12)
    assert float(T_loss(T, n, T, rho, BOX)) == pytest.approx(0.0, abs=1e-12)
    assert float(n_e_loss(1.1 * n, n, T, rho, BOX)) > 0
    assert float(T_loss(0.9 * T, n, T, rho, BOX)) > 0
    # Weighted by ρ_DM: doubling it doubles the loss.
    assert float(n_e_loss(1.1 * n, n, T, 2 * rho, BOX)) == pytest.approx(2 * float(n_e_loss(1.1 * n, n, T, rho, BOX)))


def test_slab_masks_partition_the_box():
    train, val = slab_mask(SHAPE, 0.25), slab_mask(SHAPE, 0.25, validation=True)
    assert not np.any(np.asarray(train & val)) and np.all(np.asarray(train | val))
    assert int(val.sum()) == 4 * 16 * 16 and np.all(np.asarray(val[12:]))
    with pytest.raises(ValueError, match="validation_fraction"):
        slab_mask(SHAPE, 1.5)


def test_gradients_match_finite_differences(getkey):
    n = jnp.exp(0.3 * jax.random.normal(getkey(), SHAPE))
    T = jnp.exp(0.3 * jax.random.normal(getkey(), SHAPE))
    rho = jnp.ones(SHAPE)
    pert = jax.random.normal(getkey(), SHAPE)
    mask = slab_mask(SHAPE, 0.2)
    f = lambda s: n_e_loss(n * (1 + s * pert) + 0.3, n, T, rho, BOX, mask)
    g = float(jax.grad(f)(0.0))
    h = 1e-6
    assert g == pytest.approx((float(f(h)) - float(f(-h))) / (2 * h), rel=1e-5)
    # T_loss stays finite at a ReLU's zero output.
    assert np.isfinite(float(jax.grad(lambda s: T_loss(jnp.zeros(SHAPE) + s, n, T, rho, BOX))(0.0)))
