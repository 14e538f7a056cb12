"""One box over a 2 × 2 pencil device mesh (`nbody.domain.PencilDecomposition`) against one device and slabs.

Every comparison is with the single-device engine on the same key (or the
same particles), in float64, so the tolerances are round-off: positions after
2LPT and 3 FastPM steps agree to ~1e-14 h⁻¹ Mpc. Pencils hold particles in
block order; the tests convert with `to_lattice_order` / `from_lattice_order`.
The box is `test_domain`'s (32³ mesh, 16³ particles, 64 h⁻¹ Mpc), cut in 2 × 2
pencils of 16 × 16 × 32 cells.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import linear_field, lpt, nbody, paint_cic, pm_force, read_cic, white_noise
from jaxcluster.nbody.domain import (
    PencilDecomposition,
    PencilMesh,
    SlabDecomposition,
    linear_field_decomposed,
    lpt_decomposed,
    max_displacement,
    nbody_decomposed,
    paint_decomposed,
    pencil_mesh,
    pm_force_decomposed,
    read_decomposed,
    simulate_decomposed,
)

from .test_domain import A_STEPS, CFG, COSMO, HALO, _single
from .test_sharding import _assert_close, _engine_annotation_workaround, _engine_promotion  # noqa: F401

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 devices")


def _pencils(halo=HALO, px=2, py=2):
    return PencilDecomposition(pencil_mesh(px, py, jax.devices()[:4]), halo=halo)


@pytest.mark.parametrize("shape", [(16, 8, 6), (8, 8, 8)])  # n_z/2 + 1 = 4 (no padding), 5 (padded to 6)
def test_pencil_fft_equals_rfftn_and_round_trips(shape):
    dec = _pencils()
    ops = dec.mesh_ops(shape)
    spec = dec.blocks.spec
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape))
    fwd = jax.jit(jax.shard_map(ops.rfftn, mesh=dec.mesh, in_specs=spec, out_specs=spec))
    back = jax.jit(jax.shard_map(ops.irfftn, mesh=dec.mesh, in_specs=spec, out_specs=spec))
    x_k = np.asarray(fwd(x))
    np.testing.assert_allclose(np.asarray(back(fwd(x))), np.asarray(x), rtol=0, atol=1e-14)
    # device (i, j) holds all k_x, the i-th half of k_y, the j-th half of the (zero-padded) k_z
    ref = np.asarray(jnp.fft.rfftn(x))
    nzp = -(-ref.shape[2] // 2) * 2
    ref = np.pad(ref, [(0, 0), (0, 0), (0, nzp - ref.shape[2])])
    nx, nyl, nzl = shape[0], shape[1] // 2, nzp // 2
    for i in range(2):
        for j in range(2):
            block = x_k[i * nx:(i + 1) * nx, j * nyl:(j + 1) * nyl]
            np.testing.assert_allclose(block, ref[:, i * nyl:(i + 1) * nyl, j * nzl:(j + 1) * nzl], rtol=0,
                                       atol=1e-13 * np.max(np.abs(ref)))
    # and the wavevectors of that layout
    kvec = jax.jit(jax.shard_map(lambda: ops.wavevectors(jnp.float64), mesh=dec.mesh, in_specs=(),
                                 out_specs=(PartitionSpec(), PartitionSpec(None, "x"), PartitionSpec(None, None, "y"))))()
    np.testing.assert_allclose(np.asarray(kvec[1]).ravel(), 2 * np.pi * np.fft.fftfreq(shape[1]))
    kz = np.pad(2 * np.pi * np.fft.rfftfreq(shape[2]), (0, nzp - shape[2] // 2 - 1))
    np.testing.assert_allclose(np.asarray(kvec[2]).ravel(), kz)


def _displaced_lattice(cfg, reach_cells, seed=0):
    """Lattice positions [h⁻¹ Mpc] (C order) moved by up to ±reach_cells, plus particles sent across a corner."""
    rng = np.random.default_rng(seed)
    q = np.asarray(cfg.lattice(jnp.float64))
    pos = q + rng.uniform(-1, 1, q.shape) * reach_cells * cfg.cell_size
    ny, nz = cfg.particle_shape[1:]
    # lattice (7, 7, k): the last particle of device (0, 0)'s block in x and y, moved +4 cells in both (into
    # device (1, 1)'s block across the corner); (0, 0, k) moved −4.5 cells in both (across the periodic corner)
    for k in range(nz):
        pos[(7 * ny + 7) * nz + k, :2] = q[(7 * ny + 7) * nz + k, :2] + 4.0 * cfg.cell_size
        pos[k, :2] = q[k, :2] - 4.5 * cfg.cell_size
    return jnp.asarray(pos)


def test_paint_read_and_force_across_x_y_and_corner_boundaries():
    dec = _pencils()
    pos = _displaced_lattice(CFG, 0.9 * HALO)  # many particles leave their block in x, in y and in both
    pos_b = dec.from_lattice_order(pos, CFG.particle_shape)
    rng = np.random.default_rng(1)
    mass = jnp.asarray(rng.uniform(0.5, 1.5, CFG.n_particles))
    field = jnp.asarray(rng.normal(size=CFG.mesh_shape + (2,)))
    rho = jax.jit(lambda x, m: paint_decomposed(x, m, CFG.box_size, CFG.mesh_shape, dec))(
        pos_b, dec.from_lattice_order(mass, CFG.particle_shape))
    read = jax.jit(lambda f, x: read_decomposed(f, x, CFG.box_size, dec))(field, pos_b)
    force = jax.jit(lambda x: pm_force_decomposed(x, CFG, dec))(pos_b)
    with _engine_promotion():
        rho_ref = paint_cic(pos / CFG.cell_size, mass, CFG.mesh_shape)
        read_ref = read_cic(field, pos / CFG.cell_size)
        force_ref = pm_force(pos, CFG)
    _assert_close(rho, rho_ref)
    _assert_close(dec.to_lattice_order(read, CFG.particle_shape), read_ref)
    _assert_close(dec.to_lattice_order(force, CFG.particle_shape), force_ref)
    assert {s.data.shape for s in rho.addressable_shards} == {(16, 16, 32)}
    assert {s.data.shape for s in force.addressable_shards} == {(CFG.n_particles // 4, 3)}
    d = max_displacement(pos_b, CFG, dec)
    assert float(d[0]) > 4 * CFG.cell_size and float(d[1]) > 4 * CFG.cell_size


def test_pencils_with_one_device_along_an_axis_are_slabs():
    """4 × 1 pencils are the slabs (bit for bit); 1 × 4 are y-slabs, equal to one device to round-off."""
    pos = _displaced_lattice(CFG, 0.9 * HALO, seed=2)
    slab = jax.jit(lambda x: pm_force_decomposed(x, CFG, SlabDecomposition(halo=HALO)))(pos)
    x_slabs = jax.jit(lambda x: pm_force_decomposed(x, CFG, _pencils(px=4, py=1)))(pos)
    np.testing.assert_array_equal(np.asarray(x_slabs), np.asarray(slab))
    y_dec = _pencils(px=1, py=4)
    y_slabs = jax.jit(lambda x: pm_force_decomposed(x, CFG, y_dec))(y_dec.from_lattice_order(pos, CFG.particle_shape))
    _assert_close(y_dec.to_lattice_order(y_slabs, CFG.particle_shape), slab)


def test_pencil_run_equals_single_device():
    """White noise → 2LPT → 3 FastPM steps on 2 × 2 pencils: the single-device positions and momenta."""
    key = jax.random.key(3)
    dec = _pencils()
    with _engine_promotion():
        ref = _single(key)
    res = simulate_decomposed(key, COSMO, CFG, A_STEPS, decomposition=dec)
    pos = dec.to_lattice_order(res.pos[-1], CFG.particle_shape)
    np.testing.assert_allclose(np.asarray(pos), np.asarray(ref.pos[-1]), rtol=0, atol=1e-13)
    _assert_close(dec.to_lattice_order(res.p[-1], CFG.particle_shape), ref.p[-1])
    assert {s.data.shape for s in res.pos.addressable_shards} == {(1, CFG.n_particles // 4, 3)}


def test_gradient_through_the_pencil_run():
    """d/dΩ_m of a projection of the final positions (reversible adjoint) equals the single-device one."""
    noise = white_noise(jax.random.key(4), CFG.particle_shape)
    weights = jnp.cos(jnp.arange(CFG.n_particles, dtype=jnp.float64))
    dec = _pencils()
    a_steps = A_STEPS[:3]  # two steps: the adjoint's equality does not need more, and compiles cheaper

    def loss(om, decomposed):
        cosmo = Cosmology(om, 0.8)
        g = growth_table(cosmo)
        if decomposed:
            pos, p = lpt_decomposed(linear_field_decomposed(noise, cosmo, CFG, dec), cosmo, g, CFG, a_steps[0], dec)
            x = nbody_decomposed(pos, p, cosmo, CFG, a_steps, growth=g, decomposition=dec).pos[-1]
            x = dec.to_lattice_order(x, CFG.particle_shape)
        else:
            pos, p = lpt(linear_field(noise, cosmo, CFG), cosmo, g, CFG, a_steps[0])
            x = nbody(pos, p, cosmo, CFG, a_steps, growth=g).pos[-1]
        return jnp.sum(x[:, 0] * weights + x[:, 1] * weights[::-1])

    g_dec = jax.jit(jax.grad(lambda om: loss(om, True)))(jnp.float64(0.3))
    with _engine_promotion():
        g_ref = jax.jit(jax.grad(lambda om: loss(om, False)))(jnp.float64(0.3))
    np.testing.assert_allclose(float(g_dec), float(g_ref), rtol=1e-9)


def test_displacement_beyond_the_halo_is_nan_and_an_error():
    dec = _pencils(halo=2)
    ny, nz = CFG.particle_shape[1:]
    edge = (0 * ny + 7) * nz  # lattice (0, 7, 0): the last y plane of device (0, 0)'s block, at cell 14 of 0–15
    q = CFG.lattice(jnp.float64)
    force = jax.jit(lambda x: pm_force_decomposed(x, CFG, dec))
    out = dec.from_lattice_order(q.at[edge, 1].add(5.5 * CFG.cell_size), CFG.particle_shape)  # 3.5 cells out in y
    assert bool(jnp.all(jnp.isnan(force(out))))  # every device sees it (psum), nothing silently dropped
    inside = dec.from_lattice_order(q.at[edge, 1].add(3.5 * CFG.cell_size), CFG.particle_shape)  # 1.5 cells out
    assert bool(jnp.all(jnp.isfinite(force(inside))))
    with pytest.raises(ValueError, match="halo of 2 mesh cells .* outside its pencil"):
        simulate_decomposed(jax.random.key(3), COSMO, CFG, A_STEPS, decomposition=dec)


def test_bad_pencil_decompositions_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        PencilDecomposition(SlabDecomposition().mesh)
    with pytest.raises(ValueError, match="1-D"):
        SlabDecomposition(pencil_mesh(2, 2))
    with pytest.raises(ValueError, match="halo"):
        _pencils(halo=-1)
    with pytest.raises(ValueError, match=r"px × py = 3 × 2 must equal the 4 devices"):
        pencil_mesh(3, 2)
    assert pencil_mesh().devices.shape == (2, 2)
    with pytest.raises(ValueError, match=r"halo = 8 cells is outside its allowed range \[0, 7\] for 4 × 1 pencils"):
        _pencils(halo=8, px=4, py=1).check(CFG.mesh_shape)
    with pytest.raises(ValueError, match=r"\[0, 15\] for 2 × 2 pencils of 16 × 16 cells"):
        pm_force_decomposed(CFG.lattice(), CFG, _pencils(halo=16))
    with pytest.raises(ValueError, match=r"\[0, 13\]"):
        _pencils(halo=14).check(CFG.mesh_shape, reach=3)  # the fd4 stencil reads 3 cells beyond the halo
    with pytest.raises(ValueError, match=r"mesh_shape = \(31, 32, 32\): n_x = 31 must be a multiple of Px = 2"):
        _pencils().check((31, 32, 32))
    with pytest.raises(ValueError, match=r"n_y = 31 must be a multiple of Py = 2"):
        _pencils().check((32, 31, 32))
    with pytest.raises(ValueError, match=r"n_y = 2 must be a multiple of Py = 1 .* and of Px = 4"):
        _pencils(halo=1, px=4, py=1).check((32, 2, 32))
    with pytest.raises(ValueError, match=r"particle_shape = \(16, 15, 16\): .* \(Lagrangian blocks\)"):
        _pencils(halo=1).check((32, 32, 32), (16, 15, 16))


def test_pencil_mesh_ops_subsample_the_global_lattice_order():
    """`PencilMesh.subsample` picks every stride-th particle of the C lattice order, whatever block holds it."""
    dec = _pencils()
    shape = CFG.particle_shape
    ops = dec.mesh_ops(CFG.mesh_shape, shape)
    assert isinstance(ops, PencilMesh) and ops.n_dev == 4 and not ops.is_full
    index = dec.from_lattice_order(jnp.repeat(jnp.arange(CFG.n_particles, dtype=jnp.float64)[:, None], 3, axis=1), shape)

    def body(x):
        _, m, n = ops.subsample(x, 5)
        return m, ops.total(jnp.sum(m))

    m, total = jax.jit(jax.shard_map(body, mesh=dec.mesh, in_specs=dec.particles.spec,
                                     out_specs=(dec.particles.spec, PartitionSpec())))(index)
    np.testing.assert_array_equal(np.asarray(m), (np.asarray(index[:, 0]) % 5 == 0).astype(float))
    assert float(total) == len(range(0, CFG.n_particles, 5))


def test_the_survey_refuses_pencils():
    from jaxcluster.survey import SurveyConfig
    from jaxcluster.survey.decomposed import check_decomposition

    cfg = SurveyConfig(area_deg2=1.0, z_min=0.1, z_max=0.5, n_boxes=48, cell_size=1.0, perp_multiple=4)
    with pytest.raises(ValueError, match="decomposition .* SlabDecomposition"):
        check_decomposition(cfg, _pencils())
