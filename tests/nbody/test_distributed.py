"""One box over 2 processes × 2 virtual CPU devices (`jax.distributed` on localhost, gloo collectives).

The processes run `distributed_worker.py`; this test compares what process 0
gathered with the single-device run on the same key, in this process.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import linear_field, lpt, nbody, paint_cic, white_noise

from . import distributed_worker as worker
from .test_sharding import _assert_close, _engine_annotation_workaround, _engine_promotion  # noqa: F401

WORKER = Path(worker.__file__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices_per_process: int) -> dict:
    """This process's environment with `devices_per_process` virtual CPU devices. Its other XLA flags are
    kept: the single-device reference runs here, and a different backend optimisation level changes
    float64 results at ~1e-7 (transcendental functions)."""
    root = str(Path(__file__).resolve().parents[2])
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    return dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu",
                PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_import_does_not_start_the_backend():
    """`jax.distributed.initialize` must come before the XLA backend starts, so importing us must not start it."""
    code = ("import jax._src.xla_bridge as xb, jaxcluster, jaxcluster.cli, jaxcluster.survey.cli, "
            "jaxcluster.engines.distributed; print(xb.backends_are_initialized())")
    out = subprocess.run([sys.executable, "-c", code], env=_env(1), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_two_processes_equal_one_device(tmp_path):
    port, out = _free_port(), tmp_path / "result.npz"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), "2", str(port), str(out)], env=_env(2),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    got = np.load(out)
    assert int(got["processes"]) == 2 and int(got["n_devices"]) == 4 and int(got["local_devices"]) == 2

    cfg, cosmo = worker.CONFIG, Cosmology(0.3, 0.8)

    @jax.jit
    def single(key):
        growth = growth_table(cosmo)
        pos, p = lpt(linear_field(white_noise(key, cfg.particle_shape), cosmo, cfg), cosmo, growth, cfg,
                     worker.A_STEPS[0])
        x = nbody(pos, p, cosmo, cfg, worker.A_STEPS, growth=growth).pos[-1]
        return x, paint_cic(x / cfg.cell_size, jnp.ones_like(x[:, 0]), cfg.mesh_shape)

    with _engine_promotion():
        pos, rho = single(jax.random.key(worker.SEED))
    _assert_close(got["pos"], pos)
    _assert_close(got["rho"], rho)

    # the survey box over one device of each process: eLDL fields and maps as on one device
    import equinox as eqx

    from jaxcluster.baryons import default_eldl
    from jaxcluster.params import ThetaSim
    from jaxcluster.survey.lightcone import box_layout
    from jaxcluster.survey.maps import box_maps
    from jaxcluster.xray.emissivity import default_emissivity_table

    cfg = worker.survey_config()
    geom, theta, eldl = cfg.geometry, ThetaSim(), default_eldl()
    layout = box_layout(Cosmology.from_theta(theta), geom)
    parts = jnp.asarray(worker.clump_particles(geom))
    with _engine_promotion():
        n_e, T = eqx.filter_jit(eldl)(parts, theta, layout.z[0], geom.box_size, geom.mesh_shape)
        maps = eqx.filter_jit(box_maps)(parts, theta, layout.z[0], layout.chi[0], layout.depth, geom, eldl,
                                        default_emissivity_table(), Cosmology.from_theta(theta))
    _assert_close(got["n_e"], n_e)
    _assert_close(got["T"], T)
    for name in ("count_rate", "mass", "y"):
        _assert_close(got[name], getattr(maps, name))
    assert float(jnp.max(maps.count_rate)) > 0


@pytest.mark.slow  # three processes, ~35–50 s on 2 cores; the worker test above checks the same engine in CI
def test_run_command_distributed(tmp_path):
    """`jaxcluster run --distributed` on 2 processes writes what the single-process command writes (P(k) to float32)."""
    common = ["-m", "jaxcluster", "run", "--box", "64", "--particles", "16", "--steps", "2", "--seed", "5"]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *common, "--out", str(tmp_path / "dist"), "--distributed", "--halo", "9",
                               "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]  # one device each: slabs of 16 cells hold the z = 0 displacements (~6 cells)
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=_env(1),
                            capture_output=True, text=True, timeout=240)
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "over 2 processes, 2 devices" in logs[0]
    assert "jaxcluster run" not in logs[1]  # only process 0 prints
    pk_dist = np.loadtxt(tmp_path / "dist" / "power_spectrum.txt")
    pk_one = np.loadtxt(tmp_path / "one" / "power_spectrum.txt")
    np.testing.assert_allclose(pk_dist, pk_one, rtol=2e-4)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow  # three processes, ~30–40 s on 2 cores; tests/nbody/test_pencil.py checks pencils on 4 devices in CI
def test_run_command_on_pencils_over_two_processes(tmp_path):
    """`jaxcluster run --distributed --pencils 2x2` on 2 processes × 2 devices (the mesh's x axis across the
    processes, y within each): what the single-process command writes (P(k) to float32)."""
    common = ["-m", "jaxcluster", "run", "--box", "64", "--particles", "16", "--steps", "2", "--seed", "5"]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *common, "--out", str(tmp_path / "dist"), "--distributed", "--halo", "7",
                               "--pencils", "2x2", "--coordinator", f"localhost:{port}", "--num-processes", "2",
                               "--process-id", str(i)], env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=_env(1),
                            capture_output=True, text=True, timeout=240)
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "over 2 processes, 4 devices (2 × 2 pencils of 16 × 16 cells, halo 7)" in logs[0]
    pk_dist = np.loadtxt(tmp_path / "dist" / "power_spectrum.txt")
    pk_one = np.loadtxt(tmp_path / "one" / "power_spectrum.txt")
    np.testing.assert_allclose(pk_dist, pk_one, rtol=2e-4)
