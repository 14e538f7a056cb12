"""A lightcone box decomposed over 2 of the 4 virtual devices (`survey.decomposed`) against the single-device box.

Particles, the eLDL's n_e and T, and every map agree to round-off (float64),
and the X-ray maps are not empty (the comparison is not trivially 0 = 0).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec

from jaxcluster.baryons import default_eldl
from jaxcluster.cosmology import Cosmology
from jaxcluster.nbody.domain import SlabDecomposition, SlabMesh, max_displacement
from jaxcluster.nbody.sharding import device_mesh
from jaxcluster.params import ThetaSim
from jaxcluster.survey import SurveyConfig
from jaxcluster.survey.decomposed import box_maps_decomposed, box_particles_decomposed, check_decomposition
from jaxcluster.survey.lightcone import box_layout
from jaxcluster.survey.maps import box_maps
from jaxcluster.survey.pipeline import box_keys, box_particles, lightcone_to_z1
from jaxcluster.xray.emissivity import default_emissivity_table

from .nbody.distributed_worker import clump_particles
from .nbody.test_sharding import _assert_close, _engine_annotation_workaround, _engine_promotion  # noqa: F401

pytestmark = pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 devices")

# 1 deg² at 1 h⁻¹ Mpc cells, 16 boxes from z = 0.1: the nearest box is 28 × 28 × 64 cells; its particles
# move up to ~9.5 cells, so 2 slabs of 14 cells with a 10-cell halo (+3 for the fd4 force's reach).
CFG = SurveyConfig(area_deg2=1.0, z_min=0.1, z_max=0.5, n_boxes=16, cell_size=1.0, n_steps=3, perp_multiple=4)
HALO = 10


def _synthetic_particles(geom, seed):
    return jnp.asarray(clump_particles(geom, seed))


def test_decomposed_maps_equal_single_device():
    """eLDL n_e and T, count rates, y and mass maps of the same particles, on 2 slabs and on one device."""
    cfg = SurveyConfig(area_deg2=1.0, z_min=0.1, z_max=0.5, n_boxes=48, cell_size=1.0, perp_multiple=4)
    geom = cfg.geometry
    dec = SlabDecomposition(device_mesh("x", jax.devices()[:2]), halo=HALO)
    theta, eldl, table = ThetaSim(), default_eldl(), default_emissivity_table()
    cosmo = Cosmology.from_theta(theta)
    layout = box_layout(cosmo, geom)
    z, chi, depth = layout.z[0], layout.chi[0], layout.depth
    pos = _synthetic_particles(geom, 0)
    with _engine_promotion():
        maps_ref = eqx.filter_jit(box_maps)(pos, theta, z, chi, depth, geom, eldl, table, cosmo)
        n_e_ref, T_ref = eqx.filter_jit(eldl)(pos, theta, z, geom.box_size, geom.mesh_shape)
    pos_dec = jax.device_put(pos, dec.particles)
    maps = eqx.filter_jit(box_maps_decomposed)(pos_dec, theta, z, chi, depth, cfg, eldl, table, dec)
    ops = SlabMesh(geom.mesh_shape, dec.halo, dec.axis_name, dec.n_devices)
    n_e, T = eqx.filter_jit(lambda x: jax.shard_map(
        lambda p: eldl(p, theta, z, geom.box_size, geom.mesh_shape, ops), mesh=dec.mesh,
        in_specs=PartitionSpec("x"), out_specs=PartitionSpec("x"), check_vma=False)(x))(pos_dec)
    _assert_close(n_e, n_e_ref)
    _assert_close(T, T_ref)
    for name in ("count_rate", "mass", "y", "rho_over_rho_c"):
        _assert_close(getattr(maps, name), getattr(maps_ref, name))
    assert float(jnp.max(maps_ref.count_rate)) > 0 and float(jnp.max(T_ref)) > 0.1  # gas above the table's 0.1 keV: X-rays


@pytest.mark.slow  # two PM + eLDL boxes of 28 × 28 × 64 cells: ~1–2 min on 2 cores
def test_decomposed_box_equals_single_device():
    dec = SlabDecomposition(device_mesh("x", jax.devices()[:2]), halo=HALO)
    check_decomposition(CFG, dec, default_eldl())
    theta, eldl, table = ThetaSim(), default_eldl(), default_emissivity_table()
    layout = box_layout(Cosmology.from_theta(theta), CFG.geometry)
    key = box_keys(jax.random.key(0), CFG)[0, 0]
    z, chi, depth = layout.z[0], layout.chi[0], layout.depth

    with _engine_promotion():
        pos_ref = eqx.filter_jit(box_particles)(theta, key, z, CFG)
        maps_ref = eqx.filter_jit(box_maps)(pos_ref, theta, z, chi, depth, CFG.geometry, eldl, table,
                                            Cosmology.from_theta(theta))
        n_e_ref, T_ref = eqx.filter_jit(eldl)(pos_ref, theta, z, CFG.geometry.box_size, CFG.geometry.mesh_shape)
    pos = eqx.filter_jit(lambda *a: box_particles_decomposed(*a, dec))(theta, key, z, CFG)
    maps = eqx.filter_jit(box_maps_decomposed)(pos, theta, z, chi, depth, CFG, eldl, table, dec)

    geom = CFG.geometry
    ops = SlabMesh(geom.mesh_shape, dec.halo, dec.axis_name, dec.n_devices)
    fields = eqx.filter_jit(lambda x: jax.shard_map(
        lambda p: eldl(p, theta, z, geom.box_size, geom.mesh_shape, ops), mesh=dec.mesh,
        in_specs=PartitionSpec("x"), out_specs=PartitionSpec("x"), check_vma=False)(x))(pos)

    assert 1.0 < float(max_displacement(pos_ref, geom.pm_config(1))[0]) / geom.cell_size < HALO  # slabs exchange
    _assert_close(pos, pos_ref)
    _assert_close(fields[0], n_e_ref)
    _assert_close(fields[1], T_ref)
    for name in ("count_rate", "mass", "y", "rho_over_rho_c"):
        _assert_close(getattr(maps, name), getattr(maps_ref, name))
    assert float(jnp.max(n_e_ref)) > 10.0  # collapsed structure: the eLDL fields are compared for real


def test_lightcone_to_z1_config_and_refusals():
    z1 = lightcone_to_z1(devices=8)
    assert z1.geometry.z_max == 1.0 and z1.area_deg2 == 200.0 and z1.geometry.n_perp % 8 == 0
    small = lightcone_to_z1(devices=2, cell_size=4.0, area_deg2=2.0, n_lightcones=1, n_boxes=4)
    assert small.geometry.n_perp % 2 == 0
    with pytest.raises(ValueError, match="perp_multiple"):
        SurveyConfig(perp_multiple=0)
    odd = SurveyConfig(area_deg2=1.0, cell_size=1.0, n_boxes=16)
    if odd.geometry.n_perp % 4:
        with pytest.raises(ValueError, match="perp_multiple=4"):
            check_decomposition(odd, SlabDecomposition(device_mesh("x", jax.devices()[:4]), halo=1))
