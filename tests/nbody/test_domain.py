"""One box with particles and mesh decomposed over 4 virtual devices (`nbody.domain`) against one device.

Every comparison is with the single-device engine on the same key, so the
tolerance is round-off (float64): measured ~4e-14 h⁻¹ Mpc on positions after
3 steps. Particles that cross slab boundaries are the norm in these boxes
(the largest x displacement is ~3.5 cells, the slabs 8 cells wide), and one
test places particles on and across every boundary on purpose.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import PMConfig, linear_field, lpt, nbody, paint_cic, pm_force, step_grid, white_noise
from jaxcluster.nbody.domain import (
    SlabDecomposition,
    halo_for_box,
    max_displacement,
    paint_decomposed,
    pm_force_decomposed,
    read_decomposed,
    simulate_decomposed,
)
from jaxcluster.nbody.power import power_spectrum

from .test_sharding import _assert_close, _engine_annotation_workaround, _engine_promotion, _n_devices_holding  # noqa: F401

N_DEV = 4
pytestmark = pytest.mark.skipif(len(jax.devices()) < N_DEV, reason=f"needs {N_DEV} devices")

CFG = PMConfig(64.0, 16, mesh_shape=32)  # slabs of 8 cells (2 h⁻¹ Mpc) on 4 devices
A_STEPS = step_grid(0.1, 0.6, 3)  # to z = 0.67: the largest x displacement is ~3.5 cells
COSMO = Cosmology(0.3, 0.8)
HALO = 5  # slabs of 8 cells hold up to 7 (+ the CIC corner)


@jax.jit
def _single(key):
    growth = growth_table(COSMO)
    pos, p = lpt(linear_field(white_noise(key, CFG.particle_shape), COSMO, CFG), COSMO, growth, CFG, A_STEPS[0])
    return nbody(pos, p, COSMO, CFG, A_STEPS, growth=growth)


def test_decomposed_run_equals_single_device():
    key = jax.random.key(3)
    dec = SlabDecomposition(halo=HALO)
    with _engine_promotion():
        ref = _single(key)
    res = simulate_decomposed(key, COSMO, CFG, A_STEPS, decomposition=dec)
    _assert_close(res.pos, ref.pos)
    _assert_close(res.p, ref.p)
    assert _n_devices_holding(res.pos) == N_DEV
    # each device holds one Lagrangian slab: a quarter of the particles
    assert {s.data.shape for s in res.pos.addressable_shards} == {(1, CFG.n_particles // N_DEV, 3)}
    # particles did cross slab boundaries (else the halo exchange was not exercised)
    assert float(max_displacement(ref.pos[-1], CFG)[0]) > CFG.cell_size
    # P(k) of the painted final density is the same
    mass = jnp.ones_like(res.pos[-1][:, 0])
    rho = jax.jit(lambda x, m: paint_decomposed(x, m, CFG.box_size, CFG.mesh_shape, dec))(res.pos[-1], mass)
    with _engine_promotion():
        rho_ref = paint_cic(ref.pos[-1] / CFG.cell_size, mass, CFG.mesh_shape)
        k, pk, _ = power_spectrum(rho / jnp.mean(rho) - 1, CFG.box_size)
        _, pk_ref, _ = power_spectrum(rho_ref / jnp.mean(rho_ref) - 1, CFG.box_size)
    _assert_close(rho, rho_ref)
    _assert_close(pk, pk_ref)
    assert {s.data.shape for s in rho.addressable_shards} == {(8, 32, 32)}
    # the linear-theory halo exceeds the measured largest displacement
    assert halo_for_box(COSMO, CFG) * CFG.cell_size > float(jnp.max(max_displacement(ref.pos[-1], CFG)))


_force_decomposed = jax.jit(lambda x: pm_force_decomposed(x, CFG, SlabDecomposition(halo=HALO)))
_force_single = jax.jit(lambda x: pm_force(x, CFG))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), reach=st.floats(0.1, 1.0))
def test_force_with_particles_on_and_across_slab_boundaries(seed, reach):
    """Every particle moved by up to ±(halo · reach) cells, so slabs exchange many: force equals `pm_force`.

    (reach ≥ 0.1: an unperturbed lattice has zero force, which no relative tolerance can compare.)
    """
    rng = np.random.default_rng(seed)
    q = np.asarray(CFG.lattice(jnp.float64))
    shift = rng.uniform(-1, 1, q.shape) * reach * HALO * CFG.cell_size
    pos = jnp.asarray(q + shift)
    f = _force_decomposed(pos)
    with _engine_promotion():
        f_ref = _force_single(pos)
    _assert_close(f, f_ref)


@pytest.mark.slow  # ~15 s of compilation; the force and equality tests exercise both exchanges in CI
def test_paint_and_read_are_adjoint():
    """⟨paint(m), φ⟩ = ⟨m, read(φ)⟩ through the halo exchange (the transposes of each other)."""
    dec = SlabDecomposition(halo=3)
    rng = np.random.default_rng(1)
    pos = jnp.asarray(np.asarray(CFG.lattice(jnp.float64)) + rng.uniform(-5.9, 5.9, (CFG.n_particles, 3)))
    m = jnp.asarray(rng.normal(size=CFG.n_particles))
    phi = jnp.asarray(rng.normal(size=CFG.mesh_shape))
    painted = paint_decomposed(pos, m, CFG.box_size, CFG.mesh_shape, dec)
    read = read_decomposed(phi, pos, CFG.box_size, dec)
    np.testing.assert_allclose(float(jnp.sum(painted * phi)), float(jnp.sum(m * read)), rtol=1e-12)


def test_displacement_beyond_the_halo_is_an_error():
    dec = SlabDecomposition(halo=2)
    edge = 3 * 16 * 16  # lattice x index 3: the last plane of device 0's slab, at cell 6 of cells 0–7
    pos = CFG.lattice(jnp.float64).at[edge, 0].add(5.5 * CFG.cell_size)  # 3.5 cells out of its slab
    force = jax.jit(lambda x: pm_force_decomposed(x, CFG, dec))
    f = force(pos)
    assert bool(jnp.all(jnp.isnan(f)))  # every device sees it (psum), nothing silently dropped
    inside = force(CFG.lattice(jnp.float64).at[edge, 0].add(3.5 * CFG.cell_size))  # 1.5 cells out: in the halo
    assert bool(jnp.all(jnp.isfinite(inside)))
    with pytest.raises(ValueError, match="halo of 2 mesh cells"):
        simulate_decomposed(jax.random.key(3), COSMO, CFG, A_STEPS, decomposition=dec)


def test_gradient_through_the_decomposed_run():
    """d/dΩ_m of a projection of the final positions (reversible adjoint) equals the single-device one."""
    noise = white_noise(jax.random.key(4), CFG.particle_shape)
    weights = jnp.cos(jnp.arange(CFG.n_particles, dtype=jnp.float64))
    dec = SlabDecomposition(halo=HALO)
    from jaxcluster.nbody.domain import linear_field_decomposed, lpt_decomposed, nbody_decomposed

    def loss(om, decomposed):
        cosmo = Cosmology(om, 0.8)
        g = growth_table(cosmo)
        if decomposed:
            pos, p = lpt_decomposed(linear_field_decomposed(noise, cosmo, CFG, dec), cosmo, g, CFG, A_STEPS[0], dec)
            x = nbody_decomposed(pos, p, cosmo, CFG, A_STEPS, growth=g, decomposition=dec).pos[-1]
        else:
            pos, p = lpt(linear_field(noise, cosmo, CFG), cosmo, g, CFG, A_STEPS[0])
            x = nbody(pos, p, cosmo, CFG, A_STEPS, growth=g).pos[-1]
        return jnp.sum(x[:, 0] * weights)

    g_dec = jax.jit(jax.grad(lambda om: loss(om, True)))(jnp.float64(0.3))
    with _engine_promotion():
        g_ref = jax.jit(jax.grad(lambda om: loss(om, False)))(jnp.float64(0.3))
    np.testing.assert_allclose(float(g_dec), float(g_ref), rtol=1e-9)


def test_bad_decompositions_are_refused():
    with pytest.raises(ValueError, match="halo"):
        SlabDecomposition(halo=-1)
    with pytest.raises(ValueError, match=r"halo = 8 cells is outside its allowed range \[0, 7\]"):
        SlabDecomposition(halo=8).check(CFG.mesh_shape)
    with pytest.raises(ValueError, match=r"halo = 8 cells is outside its allowed range \[0, 7\]"):
        pm_force_decomposed(CFG.lattice(), CFG, SlabDecomposition(halo=8))
    with pytest.raises(ValueError, match="multiples of the 4 devices"):
        SlabDecomposition(halo=1).check((30, 32, 32))
    with pytest.raises(ValueError, match="particle_shape"):
        SlabDecomposition(halo=1).check((32, 32, 32), (6, 16, 16))
