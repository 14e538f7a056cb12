"""Synthetic CAMELS-like training sets: Latin hypercube, determinism, files, and resuming after a kill."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.baryons.synthetic import SyntheticGasModel
from jaxcluster.baryons.training_sets import (
    _spec_json,
    TrainingSetSpec,
    cv_spec,
    generate_training_set,
    latin_hypercube,
    lh_spec,
    simulate_sample,
    stored_halos,
    stored_spec,
    training_set_parameters,
)
from jaxcluster.io import load_run, read_camels_params
from jaxcluster.params import ThetaSim

TINY = dict(n_side=16, box_size=12.5, redshifts=(0.1, 0.33), n_steps=3, max_halos=8, capacity=4096)


@settings(max_examples=10, deadline=None)
@given(n=st.sampled_from([2, 7, 50]), seed=st.integers(0, 2**31 - 1))
def test_latin_hypercube_fills_every_stratum_once(n, seed):
    u = np.asarray(latin_hypercube(jax.random.key(seed), n).to_unit())
    assert u.shape == (n, 6)
    for j in range(6):
        assert sorted(np.floor(u[:, j] * n).astype(int)) == list(range(n))


def test_specs_match_table1_and_are_deterministic():
    cv, lh = cv_spec(), lh_spec()
    assert (cv.box_size, cv.n_side, lh.box_size, lh.n_side) == (50.0, 128, 25.0, 64)
    assert cv.box_size / cv.n_side == lh.box_size / lh.n_side == pytest.approx(0.390625)
    assert lh.redshifts == (0.1, 0.15, 0.21, 0.27, 0.33, 0.40, 0.47, 0.54)
    th_cv, _ = training_set_parameters(cv_spec(8))
    assert np.allclose(np.asarray(th_cv.to_array()), np.asarray(ThetaSim.fiducial().to_array())[None, :])
    a, sa = training_set_parameters(lh_spec(20, seed=3))
    b, sb = training_set_parameters(lh_spec(20, seed=3))
    assert np.array_equal(np.asarray(a.to_array()), np.asarray(b.to_array())) and np.array_equal(sa, sb)
    assert len(set(sa.tolist())) == 20
    with pytest.raises(ValueError, match="kind"):
        TrainingSetSpec(kind="xx", n_samples=1, box_size=25.0, n_side=64)
    with pytest.raises(ValueError, match="redshifts"):
        lh_spec(1, redshifts=(7.0,))


def test_spec_stamp_keeps_sets_made_before_the_core_sampling_resumable(tmp_path):
    """A set made with one-level gas sampling (2) has no `gas_core_subsample` in its stamp; new sets do."""
    model = SyntheticGasModel()
    old = lh_spec(4, gas_core_subsample=2)
    assert "gas_core_subsample" not in _spec_json(old, model)
    assert '"gas_core_subsample": 8' in _spec_json(lh_spec(4), model)
    for spec in (old, lh_spec(4), lh_spec(4, gas_core_subsample=5)):
        (tmp_path / "spec.json").write_text(_spec_json(spec, model))
        assert stored_spec(tmp_path) == (spec, model)
    with pytest.raises(ValueError, match="gas_core_subsample"):
        lh_spec(1, gas_core_subsample=0)


def _tiny_fields(spec, i):
    theta, seeds = training_set_parameters(spec)
    th = ThetaSim(*(np.asarray(theta.to_array())[i, j] for j in range(6)))
    return jax.jit(lambda t, k: simulate_sample(t, k, spec))(th, jax.random.key(int(seeds[i])))


def test_sample_fields_are_physical():
    spec = lh_spec(2, **TINY)
    f = _tiny_fields(spec, 0)
    assert f.n_e.shape == (2, 16, 16, 16) and f.pos.shape == (2, 16**3, 3)
    assert np.all(np.asarray(f.n_e) > 0) and np.all(np.asarray(f.T_keV) > 0)
    assert np.all((np.asarray(f.pos) >= 0) & (np.asarray(f.pos) < 12.5))
    # ρ_DM: the box mass is Ω_m ρ_c0 V at every redshift (CIC conserves mass).
    theta, _ = training_set_parameters(spec)
    om = float(theta.Omega_m[0])
    total = np.asarray(f.rho_dm).sum(axis=(1, 2, 3)) * (12.5 / 16) ** 3
    assert np.allclose(total, om * 2.77536627e11 * 12.5**3, rtol=1e-4)


@pytest.mark.slow
def test_generation_resumes_after_a_kill(tmp_path):
    """Kill a generating process mid-run, resume in-process on 4 devices: nothing lost or duplicated."""
    out = tmp_path / "lh"
    n = 24
    script = textwrap.dedent(f"""
        import jax
        jax.config.update("jax_enable_x64", True)
        from jaxcluster.baryons.training_sets import generate_training_set, lh_spec
        generate_training_set({str(out)!r}, lh_spec({n}, **{TINY!r}), progress=False)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    first = out / "LH_0" / "z0.330.h5"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the generator wrote nothing before the deadline"
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("LH_*/*.h5")}
    assert 0 < len(done_before) < 2 * n  # killed mid-run

    written = generate_training_set(out, lh_spec(n, **TINY), progress=False)
    files = sorted(out.glob("LH_*/*.h5"))
    assert len(files) == 2 * n and not list(out.glob("**/*.tmp"))
    complete_before = {p.parent.name for p in done_before if all((p.parent / f"z{z:.3f}.h5").exists() and (p.parent / f"z{z:.3f}.h5") in done_before for z in TINY["redshifts"])}
    assert set(written).isdisjoint(complete_before)  # finished samples were not redone
    assert len(written) + len(complete_before) == n
    for p, mtime in done_before.items():
        if p.parent.name in complete_before:
            assert p.stat().st_mtime_ns == mtime
    # The resumed samples (computed on 4 devices) equal a direct single-device computation.
    table = read_camels_params(out / "params.txt")
    assert table.names[:2] == ("LH_0", "LH_1") and len(table.seeds) == n
    spec = lh_spec(n, **TINY)
    i = int(written[-1].split("_")[1])
    direct = _tiny_fields(spec, i)
    run = load_run(out / f"LH_{i}" / "z0.330.h5")
    assert np.allclose(np.asarray(run.fields["n_e_cm3"]), np.asarray(direct.n_e[1]), rtol=1e-5)
    assert np.allclose(np.asarray(run.theta.to_array()), np.asarray(table.theta.to_array())[i])
    assert run.z == pytest.approx(0.33)
    halos = stored_halos(run.fields)  # the halo catalogue reads back as written
    np.testing.assert_allclose(np.asarray(halos.M200c), np.asarray(direct.halos.M200c[1]), rtol=1e-5)
    assert np.array_equal(np.asarray(halos.valid), np.asarray(direct.halos.valid[1]))
    with pytest.raises(ValueError, match="no stored halo catalogue"):
        stored_halos({k: v for k, v in run.fields.items() if k != "halo_R200c"})
    with pytest.raises(ValueError, match="another spec"):
        generate_training_set(out, lh_spec(n, **(TINY | {"n_steps": 4})), progress=False)


def test_generation_resumes_after_a_kill_at_every_write_to_the_same_bits(tmp_path, monkeypatch):
    """A kill at each write (spec.json, params.txt, every sample file), then a rerun: the same files, byte for byte;
    an unfinished set is refused by `check_complete`; another spec is refused naming the difference."""
    from jaxcluster.baryons.training_sets import check_complete
    from tests.faults import KilledAtWrite, count_writes, files_bytes, kill_at_write

    spec = lh_spec(3, **TINY)
    ref = tmp_path / "ref"
    with count_writes(monkeypatch) as writes:
        generate_training_set(ref, spec, progress=False)
    names = [f"{p.parent.name}/{p.name}" for p in writes]
    assert names[:2] == ["ref/spec.json", "ref/params.txt"] and len(names) == 2 + 3 * len(TINY["redshifts"])
    want = files_bytes(ref)
    check_complete(ref)
    for n in range(1, len(writes) + 1):
        out = tmp_path / f"k{n}"
        with kill_at_write(monkeypatch, n), pytest.raises(KilledAtWrite):
            generate_training_set(out, spec, progress=False)
        if n > 2:
            with pytest.raises(ValueError, match=f"{out.name} is unfinished: .* rerun `jaxcluster data generate`"):
                check_complete(out)
        generate_training_set(out, spec, progress=False)
        got = files_bytes(out)
        assert got.keys() == want.keys() and [k for k in got if got[k] != want[k]] == []
    with pytest.raises(ValueError, match=r"another spec or model \(spec.n_samples: 3 there, 4 requested"):
        generate_training_set(ref, lh_spec(4, **TINY), progress=False)
