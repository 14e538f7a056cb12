"""Gadget/AREPO snapshot reader: files written here in the CAMELS/IllustrisTNG HDF5 layout, read back."""

import astropy.constants as const
import astropy.units as u
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.io import pm_initial_state, read_dark_matter, read_header, temperature_keV, voxelise_gas
from jaxcluster.nbody import PMConfig, lpt_displacements, paint_cic, white_noise

from ._gadget import write_snapshot

X_H = 0.76


def _mu(x_e):
    return 4.0 / (1.0 + 3.0 * X_H + 4.0 * X_H * x_e)


def _T_keV_astropy(u_km2_s2, x_e):
    """k_B T = (2/3) u μ m_p, via T in kelvin with astropy's k_B, back to keV."""
    T_K = (2.0 / 3.0) * (u_km2_s2 * (u.km / u.s) ** 2) * _mu(x_e) * const.m_p / const.k_B
    return (const.k_B * T_K.to(u.K)).to_value(u.keV)


def _gas(coords_kpc, mass, x_e, u_km2_s2, dtype=np.float64):
    n = len(coords_kpc)
    return {
        "Coordinates": np.asarray(coords_kpc, dtype=dtype),
        "Masses": np.broadcast_to(np.asarray(mass, dtype=dtype), (n,)).copy(),
        "ElectronAbundance": np.broadcast_to(np.asarray(x_e, dtype=dtype), (n,)).copy(),
        "InternalEnergy": np.broadcast_to(np.asarray(u_km2_s2, dtype=dtype), (n,)).copy(),
        "ParticleIDs": np.arange(n, dtype=np.uint64),
    }


def _lattice(n, spacing, shift):
    axes = [(np.arange(n) + s) * spacing for s in shift]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


# ----------------------------------------------------------------- header


def test_header_fields_and_units(tmp_path):
    path = tmp_path / "snap_033.hdf5"
    write_snapshot(path, box_kpc_h=25000.0, redshift=0.21, h=0.6711, omega0=0.3,
                   gas=_gas(np.zeros((1, 3)), 1e-3, 1.0, 1e4), dm_mass=0.5)
    hdr = read_header(path)
    assert hdr.box_size == 25000.0 and hdr.box_size_Mpc_h() == pytest.approx(25.0)
    assert hdr.redshift == 0.21 and hdr.hubble_param == 0.6711 and hdr.omega0 == 0.3
    assert hdr.mass_table_1e10Msun_h[1] == 0.5 and hdr.num_files == 1
    assert hdr.scale_factor == pytest.approx(1 / 1.21)


@pytest.mark.parametrize("attr", ["BoxSize", "Redshift", "HubbleParam", "Omega0"])
def test_missing_header_attribute_is_named(tmp_path, attr):
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=1000.0, redshift=0.0, gas=_gas(np.zeros((1, 3)), 1.0, 1.0, 1.0),
                   skip_header_attrs=(attr,))
    with pytest.raises(ValueError, match=attr):
        read_header(path)


def test_not_a_snapshot(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f.create_group("PartType0")
    with pytest.raises(ValueError, match="Header"):
        read_header(tmp_path / "x.hdf5")
    with pytest.raises(ValueError, match="does not exist"):
        read_header(tmp_path / "absent.hdf5")


# ----------------------------------------------------------------- gas: n_e


def test_uniform_gas_has_the_analytic_electron_density(tmp_path):
    box_kpc, h, x_e, m = 10000.0, 0.6711, 1.157, 0.02
    n_mesh, n_side = 8, 16
    # A lattice twice as fine as the mesh, shifted off the nodes: CIC paints it uniformly.
    coords = _lattice(n_side, box_kpc / n_side, (0.17, 0.31, 0.05))
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=box_kpc, redshift=0.3, h=h, gas=_gas(coords, m, x_e, 1e6, dtype=np.float32))
    fields = voxelise_gas(path, mesh_shape=n_mesh)
    rho = n_side**3 * m * 1e10 * u.Msun / h / (box_kpc * u.kpc / h) ** 3
    n_e_expected = (x_e * X_H * rho / const.m_p).to_value(u.cm**-3)
    assert fields.n_e_cm3.shape == (n_mesh,) * 3
    np.testing.assert_allclose(np.asarray(fields.n_e_cm3), n_e_expected, rtol=1e-5)


def test_float32_fields_match_float64(tmp_path):
    rng = np.random.default_rng(6)
    box_kpc, n = 25000.0, 200
    gas = _gas(rng.uniform(0, box_kpc, (n, 3)), rng.uniform(1e-4, 1e-2, n), rng.uniform(0, 1.2, n),
               rng.uniform(1e3, 1e6, n), dtype=np.float32)
    write_snapshot(tmp_path / "snap.hdf5", box_kpc_h=box_kpc, redshift=0.1, gas=gas)
    f64 = voxelise_gas(tmp_path / "snap.hdf5", mesh_shape=8)
    f32 = voxelise_gas(tmp_path / "snap.hdf5", mesh_shape=8, dtype=jnp.float32)
    assert f32.n_e_cm3.dtype == f32.T_keV.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(f32.n_e_cm3), np.asarray(f64.n_e_cm3), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(np.asarray(f32.T_keV), np.asarray(f64.T_keV), rtol=1e-4, atol=1e-8)
    assert float(jnp.max(f64.n_e_cm3)) > 0


def test_electron_count_is_conserved(tmp_path):
    rng = np.random.default_rng(1)
    box_kpc, h, n = 5000.0, 0.7, 300
    coords = rng.uniform(0, box_kpc, (n, 3))
    m, x_e = rng.uniform(0.001, 0.01, n), rng.uniform(0.0, 1.2, n)
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=box_kpc, redshift=1.0, h=h, gas=_gas(coords, m, x_e, 1e5))
    fields = voxelise_gas(path, mesh_shape=(6, 6, 6))
    v_cell = ((box_kpc / 6 * u.kpc / h) ** 3).to_value(u.cm**3)
    n_electrons = np.sum(x_e * X_H * (m * 1e10 * u.Msun / h / const.m_p).to_value(u.dimensionless_unscaled))
    assert float(jnp.sum(fields.n_e_cm3)) * v_cell == pytest.approx(n_electrons, rel=1e-10)


def test_chunks_and_multi_file_snapshots_give_the_same_fields(tmp_path):
    rng = np.random.default_rng(2)
    box_kpc, n = 4000.0, 101
    gas = _gas(rng.uniform(0, box_kpc, (n, 3)), rng.uniform(0.001, 0.01, n), rng.uniform(0, 1.2, n),
               rng.uniform(1e4, 1e6, n))
    write_snapshot(tmp_path / "one.hdf5", box_kpc_h=box_kpc, redshift=0.5, gas=gas)
    split = {k: (v[:40], v[40:]) for k, v in gas.items()}
    for i in range(2):
        write_snapshot(tmp_path / f"snap_010.{i}.hdf5", box_kpc_h=box_kpc, redshift=0.5,
                       gas={k: v[i] for k, v in split.items()}, num_files=2, num_total=(n, 0, 0, 0, 0, 0))
    ref = voxelise_gas(tmp_path / "one.hdf5", mesh_shape=5)
    small = voxelise_gas(tmp_path / "one.hdf5", mesh_shape=5, chunk_size=7)
    multi = voxelise_gas(tmp_path / "snap_010.0.hdf5", mesh_shape=5)
    assert read_header(tmp_path / "snap_010.0.hdf5").num_files == 2
    for other in (small, multi):
        np.testing.assert_allclose(np.asarray(other.n_e_cm3), np.asarray(ref.n_e_cm3), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(other.T_keV), np.asarray(ref.T_keV), rtol=1e-12)
    (tmp_path / "snap_010.1.hdf5").unlink()
    with pytest.raises(ValueError, match="snap_010.1.hdf5"):
        voxelise_gas(tmp_path / "snap_010.0.hdf5", mesh_shape=5)


def test_default_mesh_is_the_seed_voxel_size(tmp_path):
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=25000.0, redshift=0.1, gas=_gas(np.full((2, 3), 100.0), 0.01, 1.0, 1e5))
    fields = voxelise_gas(path)
    assert fields.n_e_cm3.shape == (64, 64, 64)  # 25 / 0.39 → 64 voxels of 0.3906 h⁻¹ Mpc
    assert voxelise_gas(path, cell_size_Mpc_h=25.0 / 10).T_keV.shape == (10, 10, 10)


# ----------------------------------------------------------------- gas: T


def test_constants_and_temperature_formula():
    from jaxcluster.io import snapshots

    assert snapshots.PROTON_MASS_G == pytest.approx(const.m_p.cgs.value, rel=1e-12)
    assert snapshots.SOLAR_MASS_G == pytest.approx(const.M_sun.cgs.value, rel=1e-12)
    assert snapshots.MPC_CM == pytest.approx(u.Mpc.to(u.cm), rel=1e-12)
    assert snapshots.KEV_ERG == pytest.approx(u.keV.to(u.erg), rel=1e-12)
    u_, x_e = np.array([1e4, 3e6]), np.array([0.0, 1.16])
    np.testing.assert_allclose(temperature_keV(u_, x_e), _T_keV_astropy(u_, x_e), rtol=1e-9)
    # Fully ionised H + He (x_e = 1 + Y/(2X) ≈ 1.158): μ ≈ 0.588.
    assert _mu(1 + 0.24 / (2 * 0.76)) == pytest.approx(0.5882, abs=1e-4)


def test_uniform_gas_has_the_analytic_temperature(tmp_path):
    rng = np.random.default_rng(3)
    box_kpc, u_, x_e = 8000.0, 4e5, 1.1
    coords = rng.uniform(0, box_kpc, (500, 3))
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=box_kpc, redshift=0.0, gas=_gas(coords, rng.uniform(1e-3, 1e-2, 500), x_e, u_))
    T = np.asarray(voxelise_gas(path, mesh_shape=4).T_keV)
    np.testing.assert_allclose(T, _T_keV_astropy(u_, x_e), rtol=1e-10)
    assert 1.0 < _T_keV_astropy(u_, x_e) < 2.0  # a cluster-like temperature


def test_mass_weighted_temperature_of_two_populations(tmp_path):
    rng = np.random.default_rng(4)
    box_kpc, n = 8000.0, 5
    coords = rng.uniform(0, box_kpc, (n, 3))
    (m1, u1, x1), (m2, u2, x2) = (0.002, 4e5, 1.0), (0.006, 3e6, 1.16)
    gas = {k: np.concatenate([a, b]) for (k, a), b in zip(
        _gas(coords, m1, x1, u1).items(), _gas(coords, m2, x2, u2).values())}
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=box_kpc, redshift=0.2, gas=gas)
    fields = voxelise_gas(path, mesh_shape=8)
    T1, T2 = _T_keV_astropy(u1, x1), _T_keV_astropy(u2, x2)
    expected = (m1 * T1 + m2 * T2) / (m1 + m2)
    mass = np.asarray(paint_cic(jnp.asarray(coords / 1000.0), jnp.ones(n), (8, 8, 8)))
    T = np.asarray(fields.T_keV)
    np.testing.assert_allclose(T[mass > 0], expected, rtol=1e-10)
    assert np.all(T[mass == 0] == 0.0) and np.sum(mass == 0) > 0  # empty voxels → 0


def test_cic_mass_weighting_by_hand(tmp_path):
    # Mesh of 4 cells of 1 h⁻¹ Mpc; particles at x = 0.25 and 0.5 cells on the y = z = 0 nodes.
    coords = np.array([[250.0, 0.0, 0.0], [500.0, 0.0, 0.0]])
    (m1, u1), (m2, u2) = (0.01, 1e5), (0.03, 2e6)
    gas = _gas(coords, np.array([m1, m2]), 1.0, np.array([u1, u2]))
    path = tmp_path / "snap.hdf5"
    write_snapshot(path, box_kpc_h=4000.0, redshift=0.0, gas=gas)
    T = np.asarray(voxelise_gas(path, mesh_shape=4).T_keV)
    T1, T2 = _T_keV_astropy(u1, 1.0), _T_keV_astropy(u2, 1.0)
    w0, w1 = (0.75, 0.5), (0.25, 0.5)
    assert T[0, 0, 0] == pytest.approx((w0[0] * m1 * T1 + w0[1] * m2 * T2) / (w0[0] * m1 + w0[1] * m2), rel=1e-12)
    assert T[1, 0, 0] == pytest.approx((w1[0] * m1 * T1 + w1[1] * m2 * T2) / (w1[0] * m1 + w1[1] * m2), rel=1e-12)
    assert T[2, 0, 0] == 0.0 and T[0, 1, 0] == 0.0


# ----------------------------------------------------------------- malformed gas


def test_missing_gas_group_or_dataset_is_named(tmp_path):
    dm = {"Coordinates": np.zeros((1, 3)), "Velocities": np.zeros((1, 3)), "ParticleIDs": np.array([1])}
    write_snapshot(tmp_path / "dmo.hdf5", box_kpc_h=1000.0, redshift=0.0, dm=dm, dm_mass=1.0)
    with pytest.raises(ValueError, match="PartType0"):
        voxelise_gas(tmp_path / "dmo.hdf5", mesh_shape=4)
    gas = _gas(np.zeros((2, 3)), 1.0, 1.0, 1.0)
    del gas["ElectronAbundance"]
    write_snapshot(tmp_path / "noxe.hdf5", box_kpc_h=1000.0, redshift=0.0, gas=gas)
    with pytest.raises(ValueError, match="ElectronAbundance"):
        voxelise_gas(tmp_path / "noxe.hdf5", mesh_shape=4)
    bad = _gas(np.zeros((2, 3)), 1.0, 1.0, -1.0)
    write_snapshot(tmp_path / "neg.hdf5", box_kpc_h=1000.0, redshift=0.0, gas=bad)
    with pytest.raises(ValueError, match="InternalEnergy"):
        voxelise_gas(tmp_path / "neg.hdf5", mesh_shape=4)
    with pytest.raises(ValueError, match="mesh_shape"):
        voxelise_gas(tmp_path / "neg.hdf5", mesh_shape=1)


def test_multi_file_snapshot_needs_its_first_chunk_name(tmp_path):
    write_snapshot(tmp_path / "snap.hdf5", box_kpc_h=1000.0, redshift=0.0, gas=_gas(np.zeros((1, 3)), 1.0, 1.0, 1.0),
                   num_files=2)
    with pytest.raises(ValueError, match="NumFilesPerSnapshot"):
        read_header(tmp_path / "snap.hdf5")


# ----------------------------------------------------------------- dark matter and PM restart


def _lpt_snapshot(tmp_path, getkey, box=25.0, n=8, z=6.0):
    cfg = PMConfig(box, n)
    a = 1.0 / (1.0 + z)
    # Zel'dovich in our convention (`lpt`): x = q + D₁Ψ₁, p = a³E dx/da = G₁Ψ₁ [h⁻¹ Mpc],
    # with arbitrary growth numbers (the restart must not care where they came from).
    delta = 0.5 * white_noise(getkey(), cfg.particle_shape)
    psi1, _ = lpt_displacements(delta, cfg, order=1)
    d1, g1 = 0.21, 0.17
    pos = np.asarray(cfg.lattice()) + d1 * np.asarray(psi1)
    p = g1 * np.asarray(psi1)
    u_pec = 100.0 * p / a  # u = a dx/dt [km/s] from p = a u / H₀
    v_gadget = u_pec / np.sqrt(a)  # Gadget stores u / √a
    ids = np.arange(1, cfg.n_particles + 1, dtype=np.uint64)  # N-GenIC numbering, C lattice order
    perm = np.random.default_rng(5).permutation(cfg.n_particles)  # files are not in ID order
    dm = {"Coordinates": np.mod(pos, box)[perm] * 1000.0, "Velocities": v_gadget[perm], "ParticleIDs": ids[perm]}
    half = cfg.n_particles // 2
    for i, sl in enumerate((slice(None, half), slice(half, None))):
        write_snapshot(tmp_path / f"snap_000.{i}.hdf5", box_kpc_h=box * 1000.0, redshift=z, dm_mass=0.61,
                       dm={k: v[sl] for k, v in dm.items()}, num_files=2,
                       num_total=(0, cfg.n_particles, 0, 0, 0, 0))
    return cfg, pos, p, dm


def test_read_dark_matter_units(tmp_path, getkey):
    cfg, _, _, dm = _lpt_snapshot(tmp_path, getkey)
    out = read_dark_matter(tmp_path / "snap_000.0.hdf5")
    np.testing.assert_allclose(out.pos_Mpc_h, np.mod(dm["Coordinates"] / 1000.0, 25.0), rtol=1e-14)
    np.testing.assert_array_equal(out.vel_km_s_gadget, dm["Velocities"])
    np.testing.assert_array_equal(out.ids, dm["ParticleIDs"].astype(np.int64))
    np.testing.assert_array_equal(out.mass_1e10Msun_h, np.full(cfg.n_particles, 0.61))


def test_pm_restart_recovers_lpt_positions_and_momenta(tmp_path, getkey):
    cfg, pos, p, _ = _lpt_snapshot(tmp_path, getkey)
    pos_r, p_r = pm_initial_state(tmp_path / "snap_000.0.hdf5", cfg)
    assert pos_r.shape == p_r.shape == (cfg.n_particles, 3)
    d = np.asarray(pos_r) - pos
    d -= 25.0 * np.round(d / 25.0)  # periodic
    np.testing.assert_allclose(d, 0.0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(p_r), p, rtol=1e-10, atol=1e-12)
    # Sorted by ID = lattice order: each particle is near its own lattice site.
    q = np.asarray(cfg.lattice())
    dq = np.asarray(pos_r) - q
    dq -= 25.0 * np.round(dq / 25.0)
    assert np.max(np.abs(dq)) < cfg.particle_spacing
    pos32, _ = pm_initial_state(tmp_path / "snap_000.0.hdf5", cfg, dtype=jnp.float32)
    assert pos32.dtype == jnp.float32


def test_pm_restart_rejects_mismatched_config(tmp_path, getkey):
    _lpt_snapshot(tmp_path, getkey)
    with pytest.raises(ValueError, match="box size"):
        pm_initial_state(tmp_path / "snap_000.0.hdf5", PMConfig(50.0, 8))
    with pytest.raises(ValueError, match="particle_shape"):
        pm_initial_state(tmp_path / "snap_000.0.hdf5", PMConfig(25.0, 4))


def test_dark_matter_without_masses_is_named(tmp_path):
    dm = {"Coordinates": np.zeros((2, 3)), "Velocities": np.zeros((2, 3)), "ParticleIDs": np.array([1, 2])}
    write_snapshot(tmp_path / "s.hdf5", box_kpc_h=1000.0, redshift=0.0, dm=dm, dm_mass=0.0)
    with pytest.raises(ValueError, match="PartType1/Masses"):
        read_dark_matter(tmp_path / "s.hdf5")
    del dm["Velocities"]
    write_snapshot(tmp_path / "t.hdf5", box_kpc_h=1000.0, redshift=0.0, dm=dm, dm_mass=1.0)
    with pytest.raises(ValueError, match="PartType1/Velocities"):
        read_dark_matter(tmp_path / "t.hdf5")


@pytest.mark.parametrize("field, bad", [("Coordinates", np.nan), ("Velocities", np.inf)])
def test_read_dark_matter_refuses_non_finite_particles_naming_the_file(tmp_path, field, bad):
    dm = {"Coordinates": np.full((8, 3), 100.0), "Velocities": np.zeros((8, 3)),
          "ParticleIDs": np.arange(1, 9, dtype=np.uint64)}
    dm[field][3, 1] = bad
    path = tmp_path / "snap_000.hdf5"
    write_snapshot(path, box_kpc_h=1000.0, redshift=1.0, dm_mass=0.5, dm=dm)
    with pytest.raises(ValueError, match=rf"{path}.*PartType1/{field}"):
        read_dark_matter(path)
