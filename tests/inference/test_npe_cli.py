"""`jaxcluster npe train | infer | validate`: products, resume after a kill to the same bits, refusals."""

import json

import h5py
import numpy as np
import pytest

from jaxcluster.inference import npe as npe_module
from jaxcluster.inference import compressor as compressor_module
from jaxcluster.inference.npe_cli import main
from jaxcluster.inference.npe_run import load_npe
from jaxcluster.inference.posterior_files import read_posterior

NAMES = ("Omega_m", "sigma_8")
FAST = ["--epochs", "12", "--patience", "50", "--batch-size", "64", "--draws", "50", "--no-progress"]
COMP = ["--summary", "compressor", "--compressor-epochs", "3", "--compressor-width", "4", "--compressor-hidden", "16",
        "--compressor-blocks", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """300 analytic (θ, XOD) pairs of Ω_m and σ_8 (reduced quadrature, a 3 × 3 × 2 XOD over 200 deg²)."""
    from jaxcluster.analytic import AnalyticModel, SurveySpec, XODBinning
    from jaxcluster.inference import AnalyticSimulator, BoxPrior, generate_dataset

    model = AnalyticModel(NAMES, survey=SurveySpec(area_deg2=200.0, n_mass=16, n_z_per_bin=2, n_gh=3, n_sigma_knots=6),
                          binning=XODBinning(np.geomspace(0.02, 2.0, 4), np.geomspace(0.1, 2.0, 4), [0.1, 0.3, 0.5]))
    path = tmp_path_factory.mktemp("npe") / "analytic.h5"
    generate_dataset(AnalyticSimulator(model), BoxPrior.analytic(NAMES), 300, path, seed=3, chunk_size=150,
                     progress=False)
    return path


def _leaves_equal(a, b):
    import equinox as eqx
    import jax

    la, lb = jax.tree.leaves(eqx.filter(a, eqx.is_array)), jax.tree.leaves(eqx.filter(b, eqx.is_array))
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_train_products_infer_and_validate(dataset, tmp_path, capsys):
    out = tmp_path / "sqrt"
    assert main(["train", str(dataset), "--out", str(out), "--summary", "sqrt", "--members", "2", *FAST,
                 "--epochs", "40", "--learning-rate", "3e-3"]) == 0
    manifest = json.loads((out / "npe.json").read_text())
    for name in ("posterior.eqx", "posterior.json", "training.png", "training.json", "calibration.json",
                 "ranks.png", "coverage.png", "settings.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    assert manifest["names"] == list(NAMES) and manifest["n_test"] == 30 and manifest["n_train"] == 270
    assert manifest["provenance"]["command"] == "npe train" and manifest["provenance"]["seed"] == 0
    assert manifest["dataset"]["xod_edges"]["z"] == [0.1, 0.3, 0.5]
    cal = manifest["calibration"]
    assert set(cal["sbc_rank_ks_pvalue"]) == set(NAMES) and 0 <= cal["tarp_max_abs_deviation"] <= 1
    # 270 pairs of a 200 deg² survey constrain Ω_m and σ_8 well inside their prior boxes
    assert min(cal["posterior_std_over_prior_std"].values()) < 0.7
    trained, _ = load_npe(out)
    assert trained.compressor is None and trained.posterior.n_members == 2

    # infer on one XOD of the dataset: samples, summary table, corner plot, the truth
    assert main(["infer", str(out), "--xod", str(dataset), "--index", "7", "--samples", "500"]) == 0
    samples, names, attrs = read_posterior(out / "infer_analytic_7" / "posterior.h5")
    with h5py.File(dataset) as f:
        truth = f["theta"][7]
    assert samples.shape == (500, 2) and names == NAMES and np.allclose(attrs["truth"], truth)
    assert attrs["provenance"]["command"] == "npe infer"
    assert (out / "infer_analytic_7" / "corner.png").is_file()
    # a second posterior of the same XOD drawn beside it; one of other parameters refused
    assert main(["infer", str(out), "--xod", str(dataset), "--index", "7", "--samples", "200", "--out",
                 str(tmp_path / "cmp"), "--compare", str(out / "infer_analytic_7" / "posterior.h5")]) == 0
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "cmp" / "corner.png").shape[-1] in (3, 4)
    from jaxcluster.inference.posterior_files import write_posterior

    write_posterior(tmp_path / "other", np.zeros((10, 1)), ["Omega_m"], method="x", provenance={}, figure=False)
    capsys.readouterr()
    assert main(["infer", str(out), "--xod", str(dataset), "--index", "7", "--out", str(tmp_path / "cmp2"),
                 "--compare", str(tmp_path / "other" / "posterior.h5")]) == 2
    assert "has parameters ('Omega_m',)" in capsys.readouterr().err
    from astropy.table import Table

    table = Table.read(out / "infer_analytic_7" / "posterior_summary.ecsv")
    assert list(table["name"]) == list(NAMES)
    assert np.all(table["lo95"] <= table["lo68"]) and np.all(table["lo68"] <= table["hi68"])
    assert np.allclose(table["mean"], samples.mean(0))

    # validate on the first 40 XODs of a dataset
    assert main(["validate", str(out), "--dataset", str(dataset), "--max", "40", "--draws", "30"]) == 0
    report = json.loads((out / "validate_analytic" / "calibration.json").read_text())
    assert report["n_test"] == 40 and len(report["ranks"]) == 40


def test_infer_refuses_other_bins_and_takes_simulate_files(dataset, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", str(dataset), "--out", str(out), "--summary", "sqrt", "--test-fraction", "0", *FAST]) == 0
    assert not (out / "calibration.json").exists()
    xod = np.ones((3, 3, 2))
    edges = dict(cr_edges=np.geomspace(0.02, 2.0, 4), hr_edges=np.geomspace(0.1, 2.0, 4), z_edges=[0.1, 0.3, 0.5])
    good = tmp_path / "xod.npz"
    np.savez(good, xod=xod, **edges, theta=[0.31, 0.79, 0.8, 0.8, 1.0, 1.0],
             theta_names=["Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2"], area_deg2=200.0)
    assert main(["infer", str(out), "--xod", str(good), "--samples", "100", "--out", str(tmp_path / "i")]) == 0
    _, _, attrs = read_posterior(tmp_path / "i" / "posterior.h5")
    assert np.allclose(attrs["truth"], [0.31, 0.79])  # θ_sim truth picked by name
    np.savez(tmp_path / "small.npz", xod=xod, **edges, area_deg2=4.0)
    capsys.readouterr()
    assert main(["infer", str(out), "--xod", str(tmp_path / "small.npz")]) == 2
    assert "covers 4 deg², the training XODs 200 deg²" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, xod=xod, **dict(edges, z_edges=[0.1, 0.25, 0.5]))
    capsys.readouterr()
    assert main(["infer", str(out), "--xod", str(bad)]) == 2
    assert "z bin edges" in capsys.readouterr().err
    np.savez(bad, xod=np.ones((3, 3, 3)))
    assert main(["infer", str(out), "--xod", str(bad)]) == 2
    assert "shape (3, 3, 3)" in capsys.readouterr().err


def test_train_resumes_after_kills_to_the_same_bits(dataset, tmp_path, monkeypatch):
    """Kills injected in the compressor's and in the posterior's epochs: reruns end with the uninterrupted bits."""
    ref = tmp_path / "ref"
    args = ["train", str(dataset), *COMP, *FAST]
    assert main([*args, "--out", str(ref)]) == 0

    out = tmp_path / "killed"
    for module, name, at in ((compressor_module, "_run_epoch", 2), (npe_module, "_epoch", 5)):
        original, calls = getattr(module, name), [0]

        def interrupted(*a, _original=original, _calls=calls, _at=at, **kw):
            _calls[0] += 1
            if _calls[0] == _at:
                raise KeyboardInterrupt  # a kill between two checkpoints
            return _original(*a, **kw)

        monkeypatch.setattr(module, name, interrupted)
        with pytest.raises(KeyboardInterrupt):
            main([*args, "--out", str(out)])
        monkeypatch.setattr(module, name, original)
        assert (out / "checkpoints").is_dir() and not (out / "npe.json").exists()
    with pytest.raises(ValueError, match="unfinished"):
        load_npe(out)
    assert main([*args, "--out", str(out)]) == 0
    a, _ = load_npe(ref)
    b, _ = load_npe(out)
    assert _leaves_equal(a, b)
    ca, cb = (json.loads((d / "calibration.json").read_text()) for d in (ref, out))
    assert ca == cb


def test_train_refuses_other_settings_or_dataset(dataset, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", str(dataset), "--out", str(out), "--summary", "sqrt", *FAST]) == 0
    capsys.readouterr()
    assert main(["train", str(dataset), "--out", str(out), "--summary", "sqrt", *FAST, "--seed", "1"]) == 2
    assert "seed: 0 there, 1 requested" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    with h5py.File(dataset) as f, h5py.File(other, "w") as g:
        for k in ("theta", "xod"):
            g[k] = f[k][:]
        g["xod"][0, 0, 0, 0] += 1.0
        for k, v in f.attrs.items():
            g.attrs[k] = v
    assert main(["train", str(other), "--out", str(out), "--summary", "sqrt", *FAST]) == 2
    assert "dataset_sha256:" in capsys.readouterr().err
    # a finished folder, same command: nothing to do
    assert main(["train", str(dataset), "--out", str(out), "--summary", "sqrt", *FAST]) == 0
    assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["--members", "0"], "n_members = 0"),
    (["--test-fraction", "0.6"], "test_fraction = 0.6"),
    (["--seed", str(2**32)], "seed = 4294967296"),
    (["--batch-size", "10000"], "batch_size = 10000"),
])
def test_train_refuses_bad_settings_by_name(dataset, tmp_path, capsys, argv, needle):
    try:
        code = main(["train", str(dataset), "--out", str(tmp_path / "x"), "--no-progress", *argv])
    except SystemExit as exit_:  # refused by the argument parser
        code = exit_.code
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_train_refuses_a_training_set_too_large_for_memory(dataset, tmp_path, capsys, monkeypatch):
    from jaxcluster.engines import memory

    monkeypatch.setattr(memory, "estimate_training_bytes", lambda *a, **k: 10**15)  # a petabyte
    assert main(["train", str(dataset), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training on 300 XODs" in err and "--no-memory-check" in err


def test_train_resumes_after_a_kill_at_every_write(dataset, tmp_path, monkeypatch):
    """A kill at each atomic write of `npe train` in turn (tests/faults.py), then a rerun: the same bits."""
    from tests.faults import count_writes, kill_at_write

    args = ["train", str(dataset), "--summary", "sqrt", "--epochs", "3", "--batch-size", "64", "--draws", "20",
            "--no-progress"]
    with count_writes(monkeypatch) as writes:
        assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    names = [w.name for w in writes]
    assert names[0] == "settings.json" and names[-1] == "npe.json"  # settings first, the manifest last
    same = ("posterior.eqx", "posterior.json", "calibration.json")  # training.json and npe.json hold wall times
    ref = {n: (tmp_path / "ref" / n).read_bytes() for n in same}
    for n in range(1, len(writes) + 1):
        out = tmp_path / f"k{n}"
        with kill_at_write(monkeypatch, n), pytest.raises(KeyboardInterrupt):
            main([*args, "--out", str(out)])
        if n < len(writes):
            with pytest.raises(ValueError, match="unfinished|no npe.json"):
                load_npe(out)
        assert main([*args, "--out", str(out)]) == 0
        assert {k: (out / k).read_bytes() for k in same} == ref, f"killed at write {n} ({names[n - 1]})"
