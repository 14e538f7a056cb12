"""(θ, XOD) datasets: chunked HDF5 round trip, resuming a killed run bit for bit, Latin hypercube strata."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.io.chunks import ChunkStore
from jaxcluster.inference.datasets import (
    BoxPrior,
    generate_dataset,
    load_dataset,
    sample_parameters,
    simulation_keys,
    unit_design,
)

# A toy simulator: Poisson counts of a θ-dependent (4, 3, 2) intensity. The
# callback sleeps so that a run lasts long enough to be killed in the middle.
TOY = textwrap.dedent("""
    import time
    import jax
    import jax.numpy as jnp

    SLEEP = 0.0  # set in the killed subprocess only

    def _slow(x):
        time.sleep(SLEEP)
        return x

    def toy(theta, key):
        lam = jnp.exp(jnp.linspace(0.0, 3.0, 24).reshape(4, 3, 2) * theta[0] + theta[1])
        lam = jax.pure_callback(_slow, jax.ShapeDtypeStruct(lam.shape, lam.dtype), lam, vmap_method="broadcast_all")
        return jax.random.poisson(key, lam).astype(lam.dtype)
""")
PRIOR = BoxPrior(["a", "b"], [0.1, 0.5], [1.0, 2.0], [False, True])
N, CHUNK, SEED = 44, 4, 7


def _toy():
    ns = {}
    exec(TOY, ns)
    return ns["toy"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (in this process, on all its devices)."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    generate_dataset(_toy(), PRIOR, N, out, seed=SEED, design="latin_hypercube", chunk_size=CHUNK,
                     metadata={"simulator": "toy"}, progress=False)
    return out


def test_round_trip(reference):
    ds = load_dataset(reference)
    assert ds.theta.shape == (N, 2) and ds.xod.shape == (N, 4, 3, 2) and ds.xod.dtype == np.float32
    np.testing.assert_array_equal(ds.theta, sample_parameters(PRIOR, N, SEED, "latin_hypercube"))
    assert ds.metadata["metadata"] == {"simulator": "toy"} and ds.prior == PRIOR
    assert not reference.with_name(reference.name + ".parts").exists()
    toy, dtype = _toy(), jnp.result_type(float)
    for i in (0, 5, N - 1):  # each row is the simulator at its own θ and its own (seed, i) key
        x = toy(jnp.asarray(ds.theta[i], dtype), simulation_keys(SEED, i, i + 1)[0])
        np.testing.assert_array_equal(ds.xod[i], np.asarray(x, np.float32))
    sub = load_dataset(reference, 3, 9)
    np.testing.assert_array_equal(sub.xod, ds.xod[3:9])
    # a finished file is returned as is; other settings are refused
    assert generate_dataset(toy, PRIOR, N, reference, seed=SEED, design="latin_hypercube", chunk_size=CHUNK,
                            metadata={"simulator": "toy"}, progress=False) == reference
    with pytest.raises(ValueError, match="other settings"):
        generate_dataset(toy, PRIOR, N, reference, seed=SEED + 1, design="latin_hypercube", chunk_size=CHUNK,
                         metadata={"simulator": "toy"}, progress=False)


def test_kill_and_resume_is_bit_identical(reference, tmp_path, monkeypatch):
    out = tmp_path / "killed.h5"
    script = TOY + textwrap.dedent(f"""
        SLEEP = 0.03
        jax.config.update("jax_enable_x64", {bool(jax.config.jax_enable_x64)})
        from jaxcluster.inference.datasets import BoxPrior, generate_dataset
        generate_dataset(toy, BoxPrior(["a", "b"], [0.1, 0.5], [1.0, 2.0], [False, True]), {N}, {str(out)!r},
                         seed={SEED}, design="latin_hypercube", chunk_size={CHUNK},
                         metadata={{"simulator": "toy"}}, progress=False)
    """)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={len(jax.devices())}")
    parts = tmp_path / "killed.h5.parts"
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 120
    while len(list(parts.glob("chunk_*.h5"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk_*.h5")}
    n_chunks = -(-N // CHUNK)
    assert 2 <= len(before) < n_chunks and not out.exists(), "the run was not killed in the middle"
    with h5py.File(parts / "chunk_000000.h5") as f:  # a chunk file written before the kill is whole
        np.testing.assert_array_equal(f["xod"][...], load_dataset(reference).xod[:CHUNK])

    # restart (here, in this process: same device count and precision as the killed run),
    # recording which chunks it computes
    written = []
    real_write = ChunkStore.publish
    monkeypatch.setattr(ChunkStore, "publish",
                        lambda self, c, *a: (written.append(self.chunk_path(c).name), real_write(self, c, *a))[1])
    generate_dataset(_toy(), PRIOR, N, out, seed=SEED, design="latin_hypercube", chunk_size=CHUNK,
                     metadata={"simulator": "toy"}, progress=False)
    assert not parts.exists()
    assert set(written).isdisjoint(before) and len(written) + len(before) == n_chunks  # nothing redone or lost
    got, ref = load_dataset(out), load_dataset(reference)
    np.testing.assert_array_equal(got.theta, ref.theta)
    np.testing.assert_array_equal(got.xod, ref.xod)
    with h5py.File(out) as f:
        assert f["xod"].shape == (N, 4, 3, 2)


def test_partial_dataset_says_resume(tmp_path):
    (tmp_path / "x.h5.parts").mkdir()
    with pytest.raises(ValueError, match="resume"):
        load_dataset(tmp_path / "x.h5")


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 40), dim=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_latin_hypercube_strata(n, dim, seed):
    """Every parameter has exactly one point in each of its n equal strata."""
    u = unit_design(jax.random.key(seed), n, dim, "latin_hypercube")
    assert u.shape == (n, dim) and np.all((u >= 0) & (u < 1))
    for j in range(dim):
        np.testing.assert_array_equal(np.sort(np.floor(u[:, j] * n)), np.arange(n))


def test_random_design_points_depend_on_index_only():
    a = unit_design(jax.random.key(3), 10, 3, "random")
    b = unit_design(jax.random.key(3), 25, 3, "random")
    np.testing.assert_array_equal(a, b[:10])
    assert len(np.unique(b[:, 0])) == 25


def test_box_prior():
    u = np.random.default_rng(0).uniform(size=(50, 2))
    th = PRIOR.from_unit(u)
    np.testing.assert_allclose(PRIOR.to_unit(th), u, rtol=1e-12)
    assert np.all((th >= PRIOR.low) & (th <= PRIOR.high))
    # log-uniform b: density 1 / (b ln(2.0 / 0.5)); uniform a: 1 / 0.9
    lp = np.asarray(PRIOR.log_prob(jnp.asarray(th)))
    np.testing.assert_allclose(lp, -np.log(0.9) - np.log(th[:, 1] * np.log(4.0)), rtol=1e-12)
    assert PRIOR.log_prob(jnp.asarray([1.5, 1.0])) == -jnp.inf
    with pytest.raises(ValueError, match="low > 0"):
        BoxPrior(["x"], [0.0], [1.0], [True])
    sim = BoxPrior.theta_sim(Omega_m=(0.25, 0.35))
    assert sim.low[0] == 0.25 and sim.log == (False, False, True, True, True, True)
    with pytest.raises(ValueError, match="Omega_m"):
        BoxPrior.theta_sim(Omega_m=(0.05, 0.35))


def test_cli(reference, tmp_path, capsys):
    from jaxcluster.cli import main

    assert main(["dataset", "info", str(reference)]) == 0
    assert '"design": "latin_hypercube"' in capsys.readouterr().out
    # any chunk size runs on any device count; the vmap width must divide it
    code = main(["dataset", "generate", "--simulator", "analytic", "--n", "8", "--out", str(tmp_path / "a.h5"),
                 "--chunk-size", "6", "--batch-size", "4", "--params", "Omega_m,sigma_8", "--no-progress"])
    assert code == 2 and "batch_size = 4" in capsys.readouterr().err
    assert main(["dataset", "info", str(tmp_path / "missing.h5")]) == 2


def test_resume_with_another_simulator_is_refused(tmp_path):
    # The simulator's arrays (e.g. eLDL weights) are fingerprinted into the settings:
    # a restart with other values must not mix its chunks into the first run's.
    import equinox as eqx

    from jaxcluster.inference.datasets import pytree_digest

    class Scaled(eqx.Module):
        scale: jax.Array

        def __call__(self, theta, key):
            return jnp.broadcast_to(self.scale * theta[0], (4, 3, 2))

    a, b = Scaled(jnp.asarray(1.0)), Scaled(jnp.asarray(2.0))
    assert pytree_digest(a) == pytree_digest(Scaled(jnp.asarray(1.0)))
    assert pytree_digest(a) != pytree_digest(b)
    assert pytree_digest(a) != pytree_digest(Scaled(jnp.asarray([1.0])))  # shape counts too
    out = tmp_path / "d.h5"
    generate_dataset(a, PRIOR, 8, out, seed=SEED, chunk_size=4, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        generate_dataset(b, PRIOR, 8, out, seed=SEED, chunk_size=4, progress=False)


def test_chunks_do_not_depend_on_the_device_count(tmp_path):
    """A chunk is micro-batches of one vmap width: 1 device or 4 (padded with repeats) give the same file."""
    import hashlib

    from jax.sharding import Mesh

    from jaxcluster.analytic import AnalyticModel, SurveySpec
    from jaxcluster.inference.datasets import AnalyticSimulator

    names = ("Omega_m", "sigma_8")
    sim = AnalyticSimulator(AnalyticModel(names, survey=SurveySpec(area_deg2=50.0, cr_cut=0.02)))
    prior = BoxPrior.analytic(names)
    one = Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    paths = []
    for mesh, name in ((one, "one.h5"), (None, "all.h5")):
        paths.append(generate_dataset(sim, prior, 10, tmp_path / name, seed=3, chunk_size=6, batch_size=3,
                                      mesh=mesh, progress=False))
    assert len(jax.devices()) > 1
    a, b = (hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    assert a == b and load_dataset(paths[0]).xod.sum() > 0
