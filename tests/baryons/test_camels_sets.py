"""Real-format CAMELS simulations (small files in the Gadget/AREPO layout) → eLDL training set."""

import numpy as np
import pytest

from jaxcluster.baryons.camels_sets import convert_camels
from jaxcluster.baryons.train import load_training_boxes
from jaxcluster.io import load_run, read_camels_params, voxelise_gas

from ..io._gadget import write_snapshot

N, BOX_KPC = 16, 12500.0


def _fake_sim(d, rng, redshifts=(6.0, 0.33, 0.21)):
    """An IC snapshot (lattice DM, IDs in C order, shuffled on disk) and gas-only snapshots."""
    d.mkdir()
    spacing = BOX_KPC / N
    grid = np.stack(np.meshgrid(*[np.arange(N) * spacing] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = grid + rng.normal(0, 0.05 * spacing, grid.shape)
    order = rng.permutation(len(grid))
    dm = {"Coordinates": np.mod(coords[order], BOX_KPC).astype(np.float32),
          "Velocities": rng.normal(0, 5.0, grid.shape).astype(np.float32)[order],
          "ParticleIDs": (np.arange(len(grid), dtype=np.uint64) + 1)[order]}
    write_snapshot(d / "snap_000.hdf5", box_kpc_h=BOX_KPC, redshift=redshifts[0], dm=dm, dm_mass=0.05)
    for k, z in enumerate(redshifts[1:], start=1):
        n_gas = 3000
        gas = {"Coordinates": rng.uniform(0, BOX_KPC, (n_gas, 3)).astype(np.float32),
               "Masses": np.full(n_gas, 1e-3, np.float32),
               "ElectronAbundance": np.full(n_gas, 1.16, np.float32),
               "InternalEnergy": rng.uniform(1e4, 1e6, n_gas).astype(np.float32),
               "ParticleIDs": np.arange(n_gas, dtype=np.uint64)}
        write_snapshot(d / f"snap_{30 - k:03d}.hdf5", box_kpc_h=BOX_KPC, redshift=z, gas=gas)


def test_convert_camels_layout_fields_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    sims = tmp_path / "IllustrisTNG"
    sims.mkdir()
    for name in ("LH_0", "LH_1"):
        _fake_sim(sims / name, rng)
    (tmp_path / "params.txt").write_text(
        "#Name Omega_m sigma_8 A_SN1 A_AGN1 A_SN2 A_AGN2 seed\n"
        "LH_0 0.3 0.8 1.0 1.0 1.0 1.0 11\nLH_1 0.25 0.9 2.0 0.5 1.5 0.8 12\n"
    )
    table = read_camels_params(tmp_path / "params.txt")
    out = tmp_path / "set"
    dirs = [sims / "LH_1", sims / "LH_0"]
    written = convert_camels(dirs, table, out, redshifts=(0.21, 0.33), n_steps=3, progress=False)
    assert written == ["LH_1", "LH_0"]
    run = load_run(out / "LH_1" / "z0.330.h5")
    assert np.allclose(np.asarray(run.theta.to_array()), [0.25, 0.9, 2.0, 1.5, 0.5, 0.8])  # our order
    gas = voxelise_gas(sims / "LH_1" / "snap_028.hdf5", mesh_shape=32)
    assert np.allclose(np.asarray(run.fields["n_e_cm3"]), np.asarray(gas.n_e_cm3))
    assert run.fields["rho_dm"].shape == (32, 32, 32)  # 12.5 / 0.39 → 32 voxels
    total = float(np.asarray(run.fields["rho_dm"]).sum()) * (12.5 / 32) ** 3
    assert total == pytest.approx(0.25 * 2.77536627e11 * 12.5**3, rel=1e-4)
    assert run.metadata["synthetic"] is False
    assert read_camels_params(out / "params.txt").names == ("LH_1", "LH_0")
    # The trainer reads it like a synthetic set; a rerun converts nothing.
    boxes = load_training_boxes(out, 0.21)
    assert boxes.n_box == 2 and boxes.mesh_shape == (32, 32, 32)
    assert convert_camels(dirs, table, out, redshifts=(0.21, 0.33), n_steps=3, progress=False) == []
    with pytest.raises(ValueError, match="no snapshot at z = 0.5"):
        convert_camels(dirs, table, tmp_path / "x", redshifts=(0.5,), progress=False)
    (sims / "LH_9").mkdir()
    with pytest.raises(ValueError, match="LH_9 is not in the parameter table"):
        convert_camels([sims / "LH_9"], table, tmp_path / "y", progress=False)


def test_convert_camels_cli(tmp_path, capsys):
    from jaxcluster.cli import main

    rng = np.random.default_rng(1)
    _fake_sim(tmp_path / "LH_0", rng)
    (tmp_path / "p.txt").write_text("LH_0 0.3 0.8 1.0 1.0 1.0 1.0 5\n")
    out = tmp_path / "out"
    assert main(["data", "convert-camels", str(tmp_path / "LH_0"), "--params", str(tmp_path / "p.txt"), "--out", str(out),
                 "--redshifts", "0.21", "--steps", "2", "--no-progress"]) == 0
    assert (out / "LH_0" / "z0.210.h5").exists() and "converted 1" in capsys.readouterr().out
    assert main(["data", "convert-camels", str(tmp_path / "nope"), "--params", str(tmp_path / "p.txt"),
                 "--out", str(out)]) == 2
    assert "nope is not a directory" in capsys.readouterr().err
