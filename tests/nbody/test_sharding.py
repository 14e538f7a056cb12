"""Sharding: a batch of boxes over devices, and one box with a slab-decomposed mesh.

Every comparison is against the single-device engine on the same inputs, so
the tolerance is round-off only: float64, a few FFTs and CIC sums whose
summation order differs (psum of per-slab corner sums, batched vs unbatched
FFTs), growing over a handful of N-body steps. Measured differences are
~1e-15 relative for the force and ~1e-14 h⁻¹ Mpc for positions; the
tolerances below leave a factor ~100–1000 above that.
"""

import contextlib
import importlib
import inspect

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import PMConfig, linear_field, lpt, nbody, pm_force, step_grid, white_noise
from jaxcluster.nbody.sharding import (
    batch_sharding,
    device_mesh,
    nbody_sharded,
    pm_force_sharded,
    simulate_batch,
    slab_force_from_density,
)

N_DEV = 4
pytestmark = pytest.mark.skipif(
    len(jax.devices()) < N_DEV,
    reason=f"needs {N_DEV} devices: set XLA_FLAGS=--xla_force_host_platform_device_count={N_DEV} before importing jax",
)

RTOL = 1e-10  # round-off in float64 (see module docstring)


def _engine_promotion():
    """Relaxed promotion for the single-device engine only.

    `linear_field`, `lpt` and `pm_force` currently mix float and complex
    (`1j * k`) and rank-broadcast `(n, 8, 3) % (3,)` in `mesh._stencil`, which
    the strict conftest settings reject; the sharded code under test runs
    strict. Drop this once those modules are strict-clean.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(jax.numpy_dtype_promotion("standard"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    return stack


@pytest.fixture(autouse=True)
def _engine_annotation_workaround(monkeypatch):
    """Use the undecorated `mesh.rfft_wavevectors` while its return annotation breaks jaxtyping.

    Its `"1 1 nz//2+1"` refers to an axis no argument binds, so every call
    raises `AnnotationError` under the pytest jaxtyping hook (and with it
    `linear_field`, `lpt`, `force_from_density`). Test-local; a no-op once
    the annotation is fixed.
    """
    mesh = importlib.import_module("jaxcluster.nbody.mesh")
    try:
        mesh.rfft_wavevectors((4, 4, 4))
    except jaxtyping.AnnotationError:
        raw = inspect.unwrap(mesh.rfft_wavevectors)
        for name in ("mesh", "ic", "lpt"):
            monkeypatch.setattr(importlib.import_module(f"jaxcluster.nbody.{name}"), "rfft_wavevectors", raw)


def _assert_close(actual, desired, rtol=RTOL):
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = np.max(np.abs(desired))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


def _n_devices_holding(x) -> int:
    return len({s.device for s in x.addressable_shards})


# ------------------------------------------------------------- batch of boxes

# One box geometry and step grid for the batch and the decomposed N-body tests,
# so that the single-device reference `_single_run` is compiled once.
CFG = PMConfig(64.0, 16, mesh_shape=32)
CFG_BATCH = CFG
A_STEPS = step_grid(0.1, 1.0, 4)  # 4 steps: 0.1, 0.325, 0.55, 0.775, 1
SNAPS = jnp.array([0.55, 1.0])


@jax.jit
def _single_run(noise, om, s8):
    """The single-device pipeline for one box: (pos, p) after LPT, the N-body result, the growth table."""
    cosmo = Cosmology(om, s8)
    growth = growth_table(cosmo)
    pos, p = lpt(linear_field(noise, cosmo, CFG), cosmo, growth, CFG, A_STEPS[0])
    return pos, p, nbody(pos, p, cosmo, CFG, A_STEPS, SNAPS, growth=growth), growth


def _batch_inputs(getkey):
    """2 cosmologies × 2 seeds."""
    om = jnp.array([0.25, 0.25, 0.35, 0.35])
    s8 = jnp.array([0.75, 0.75, 0.9, 0.9])
    keys = [getkey(), getkey()]
    noise = jnp.stack([white_noise(keys[i % 2], CFG.particle_shape) for i in range(4)])
    return noise, om, s8


def test_batch_equals_separate_runs(getkey):
    noise, om, s8 = _batch_inputs(getkey)
    cosmo = jax.vmap(lambda o, s: Cosmology(o, s))(om, s8)
    mesh = device_mesh("batch")
    with _engine_promotion():
        res = simulate_batch(noise, cosmo, CFG, A_STEPS, SNAPS, mesh=mesh)
        refs = [_single_run(noise[i], om[i], s8[i])[2] for i in range(4)]

    assert res.pos.shape == (4, 2, CFG.n_particles, 3)
    assert res.a.shape == (4, 2)
    for i, ref in enumerate(refs):
        _assert_close(res.pos[i], ref.pos)
        _assert_close(res.p[i], ref.p)
    # Boxes 0 and 2 share a seed but not a cosmology: the batch really varies.
    assert not np.allclose(np.asarray(res.pos[0]), np.asarray(res.pos[2]))
    for arr in (res.pos, res.p, res.a):
        assert arr.sharding.is_equivalent_to(batch_sharding(mesh), arr.ndim)
        assert _n_devices_holding(arr) == N_DEV


def test_batch_not_divisible_raises(getkey):
    noise = jnp.stack([white_noise(getkey(), CFG_BATCH.particle_shape) for _ in range(3)])
    cosmo = jax.vmap(lambda o: Cosmology(o))(jnp.array([0.3, 0.3, 0.3]))
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        simulate_batch(noise, cosmo, CFG_BATCH, A_STEPS, mesh=device_mesh("batch"))


def test_batch_cosmology_mismatch_raises(getkey):
    noise = jnp.stack([white_noise(getkey(), CFG_BATCH.particle_shape) for _ in range(4)])
    cosmo = jax.vmap(lambda o: Cosmology(o))(jnp.array([0.3, 0.3]))
    with pytest.raises(ValueError, match="one per box"):
        simulate_batch(noise, cosmo, CFG_BATCH, A_STEPS, mesh=device_mesh("batch"))


# --------------------------------------------------- one box, decomposed mesh


@pytest.mark.parametrize("mesh_factor", [1, 2])
def test_sharded_force_equals_pm_force(getkey, mesh_factor):
    cfg = PMConfig(100.0, 32 // mesh_factor, mesh_shape=32)
    pos = cfg.lattice() + 3.0 * jax.random.normal(getkey(), (cfg.n_particles, 3))
    mesh = device_mesh("x")
    force = jax.jit(pm_force_sharded, static_argnums=(1, 2))(pos, cfg, mesh)
    with _engine_promotion():
        ref = jax.jit(pm_force, static_argnums=1)(pos, cfg)
    _assert_close(force, ref)
    assert _n_devices_holding(force) == N_DEV
    assert force.addressable_shards[0].data.shape == (cfg.n_particles // N_DEV, 3)


def test_slab_force_from_density_and_grad(getkey):
    from jaxcluster.nbody import force_from_density

    cfg = PMConfig(100.0, 16, mesh_shape=32, gradient="exact")
    mesh = device_mesh("x")
    delta = jax.random.normal(getkey(), cfg.mesh_shape)
    out = slab_force_from_density(delta, cfg, mesh)
    with _engine_promotion():
        ref = force_from_density(jnp.fft.rfftn(delta), cfg.mesh_shape, cfg.gradient)
    _assert_close(out, ref)
    assert out.addressable_shards[0].data.shape == (32 // N_DEV, 32, 32, 3)  # x-slabs

    # Gradients through the all_gather / all_to_all / psum_scatter match plain AD.
    cfg2 = PMConfig(100.0, 8, mesh_shape=16)
    pos = cfg2.lattice() + 2.0 * jax.random.normal(getkey(), (cfg2.n_particles, 3))
    g = jax.jit(jax.grad(lambda x: jnp.sum(pm_force_sharded(x, cfg2, mesh) ** 2)))(pos)
    with _engine_promotion():
        g_ref = jax.jit(jax.grad(lambda x: jnp.sum(pm_force(x, cfg2) ** 2)))(pos)
    _assert_close(g, g_ref)


def test_nbody_sharded_equals_nbody(getkey):
    mesh = device_mesh("x")
    om, s8 = jnp.array(0.3), jnp.array(0.8)
    with _engine_promotion():
        pos, p, ref, growth = _single_run(white_noise(getkey(), CFG.particle_shape), om, s8)

    @jax.jit
    def sharded(x, v, g):
        return nbody_sharded(x, v, Cosmology(om, s8), CFG, A_STEPS, SNAPS, mesh=mesh, growth=g)

    res = sharded(pos, p, growth)
    _assert_close(res.pos, ref.pos)
    _assert_close(res.p, ref.p)
    assert res.pos.shape == (2, CFG.n_particles, 3)
    assert _n_devices_holding(res.pos) == N_DEV


def test_decomposition_shape_errors():
    mesh = device_mesh("x")
    with pytest.raises(ValueError, match="multiples of the 4 devices"):
        pm_force_sharded(jnp.zeros((6**3, 3)), PMConfig(60.0, 6), mesh)
    with pytest.raises(ValueError, match="n_ptcl"):
        pm_force_sharded(jnp.zeros((10, 3)), PMConfig(80.0, 8), mesh)
    with pytest.raises(ValueError, match="1-D device mesh"):
        pm_force_sharded(jnp.zeros((8**3, 3)), PMConfig(80.0, 8), jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b")))
