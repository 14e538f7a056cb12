"""`load_dataset` / `dataset info` refuse damaged or foreign files, naming the file and the problem (issue #26)."""

import h5py
import numpy as np
import pytest

from jaxcluster.engines.memory import MemoryEstimateError
from jaxcluster.inference.cli import main
from jaxcluster.inference.datasets import check_dataset, load_dataset

N, D = 6, 2


def _write(path, *, theta=None, xod=None, attrs=None, drop=()):
    theta = np.random.default_rng(0).uniform(0.2, 0.8, (N, D)) if theta is None else theta
    xod = np.ones((N, 4, 3, 2), np.float32) if xod is None else xod
    a = dict(param_names=["a", "b"], prior_low=[0.1, 0.1], prior_high=[1.0, 1.0], prior_log=[False, False],
             n=N, seed=0, xod_shape=[4, 3, 2], metadata="{}") | (attrs or {})
    with h5py.File(path, "w") as f:
        f["theta"], f["xod"] = theta, xod
        for k, v in a.items():
            if k not in drop:
                f.attrs[k] = v
    return path


def test_a_good_file_loads(tmp_path):
    ds = load_dataset(_write(tmp_path / "ok.h5"))
    assert ds.theta.shape == (N, D) and ds.xod.shape == (N, 4, 3, 2)
    assert check_dataset(tmp_path / "ok.h5")["n"] == N


BAD = {
    "integer xod": (dict(xod=np.ones((N, 4, 3, 2), np.int32)), "dtype int32"),
    "string theta": (dict(theta=np.array([["x", "y"]] * N, dtype="S1")), "dtype"),
    "NaN theta": (dict(theta=np.full((N, D), np.nan)), "non-finite"),
    "inf xod": (dict(xod=np.full((N, 4, 3, 2), np.inf, np.float32)), "non-finite"),
    "negative counts": (dict(xod=-np.ones((N, 4, 3, 2), np.float32)), "negative"),
    "length mismatch": (dict(xod=np.ones((N + 1, 4, 3, 2), np.float32)), "rows"),
    "3-D xod": (dict(xod=np.ones((N, 4, 3), np.float32)), "expected 4 axes"),
    "no metadata": (dict(drop=("param_names", "prior_low", "prior_high", "prior_log", "n", "seed")), "missing"),
    "wrong n": (dict(attrs=dict(n=N + 3)), "attribute n"),
    "names vs theta": (dict(attrs=dict(param_names=["a"])), "param_names"),
    "bad prior": (dict(attrs=dict(prior_low=[2.0, 0.1])), "prior"),
    "xod_shape": (dict(attrs=dict(xod_shape=[4, 3, 3])), "xod_shape"),
    "xod_edges": (dict(attrs=dict(metadata="{}", xod_edges='{"cr": [1, 2], "hr": [1, 2], "z": [0, 1]}')), "xod_edges"),
    "unreadable metadata": (dict(attrs=dict(metadata="{not json")), "metadata"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_naming_file_and_problem(tmp_path, case, capsys):
    kwargs, needle = BAD[case]
    path = _write(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(ValueError, match=needle) as err:
        check_dataset(path)
    assert str(path) in str(err.value)
    assert main(["info", str(path)]) == 2  # one line, no traceback, exit 2
    msg = capsys.readouterr().err
    assert str(path) in msg and "Traceback" not in msg
    if case not in ("NaN theta", "inf xod", "negative counts"):  # value checks: on the rows read
        with pytest.raises(ValueError, match=needle):
            load_dataset(path, 0, 0)
    with pytest.raises(ValueError, match=needle):
        load_dataset(path)


def test_not_hdf5_and_groups(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file") as err:
        load_dataset(junk)
    assert str(junk) in str(err.value)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("theta")
        f.create_group("xod")
    with pytest.raises(ValueError, match="no 'theta' dataset"):
        load_dataset(tmp_path / "g.h5")


def test_memory_check_refuses_before_reading(tmp_path, monkeypatch):
    import jaxcluster.engines.memory as memory

    path = _write(tmp_path / "ok.h5")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: (100, "test limit"))
    with pytest.raises(MemoryEstimateError, match=r"reading 6 samples .* more than the 100 B available"):
        load_dataset(path)
    assert load_dataset(path, memory_check=False).theta.shape == (N, D)
    monkeypatch.setenv("JAXCLUSTER_NO_MEMORY_CHECK", "1")
    assert load_dataset(path).theta.shape == (N, D)


def test_generate_refuses_a_chunk_too_large_for_memory(tmp_path, monkeypatch, capsys):
    import jaxcluster.engines.memory as memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: (10**6, "test limit"))
    out = tmp_path / "a.h5"
    assert main(["generate", "--simulator", "analytic", "--n", "4", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "more than the 977 KiB available (test limit)" in err and "--no-memory-check" in err
    assert not out.exists()


def test_binning_options_and_warning(monkeypatch, capsys):
    import argparse

    from jaxcluster.inference import cli

    assert cli._edges_spec("0.01,2,6") == (0.01, 2.0, 6)
    for bad in ("0,2,6", "2,1,3", "1,2", "1,2,0", "a,b,c"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._edges_spec(bad)
    job = cli.DatasetJob(simulator="survey", n=1, out="x.h5", cell_size=2.0, pixel=3.0, hr_edges=(0.01, 2.0, 6))
    assert job.survey_config().binning.hr_edges[0] == pytest.approx(0.01)
    assert cli.DatasetJob(simulator="survey", n=1, out="x.h5").survey_config().binning.hr_edges[0] == pytest.approx(0.1)

    def coverage(config, theta, key):
        return {"selected": 10, "binned": 2, "fraction_outside": 0.8,
                "cr": dict(below=0, above=0, edges=(1e-5, 1e-2), range=(2e-5, 1e-3)),
                "hr": dict(below=8, above=0, edges=(0.1, 2.0), range=(0.03, 0.2)),
                "z": dict(below=0, above=0, edges=(0.1, 0.5), range=(0.1, 0.4))}

    import jaxcluster.inference.datasets as datasets

    monkeypatch.setattr(datasets, "survey_bin_coverage", coverage)
    cli._warn_binning(job)
    err = capsys.readouterr().err
    assert "8 of the 10 detected sources" in err and "HR: 8 below 0.1" in err and "--hr-edges" in err
    monkeypatch.setattr(datasets, "survey_bin_coverage", lambda c, t, k: coverage(c, t, k) | {
        "selected": 1, "binned": 1, "fraction_outside": 0.0})
    cli._warn_binning(job)
    assert "only 1 source(s) above --cr-min" in capsys.readouterr().err
