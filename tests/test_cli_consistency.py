"""Every command: defaults in --help, one spelling of the θ_sim options, provenance in the JSON summaries,
and the analytic `hmc --xod` path (issue #24)."""

import json

import numpy as np
import pytest

from jaxcluster.cli import main

# (argv of `jaxcluster`, an option that must show its default)
HELP = [
    (["run"], "--box"),
    (["fisher"], "--omega-m"),
    (["hmc"], "--warmup"),
    (["sensitivity"], "--keys"),
    (["data", "generate"], "--n-side"),
    (["data", "convert-camels"], "--steps"),
    (["eldl", "train"], "--epochs"),
    (["tables", "build"], "--n-T"),
    (["dataset", "generate"], "--design"),
    (["dataset", "status"], "--lease"),
    (["npe", "train"], "--estimator"),
    (["npe", "infer"], "--samples"),
    (["npe", "validate"], "--draws"),
]


@pytest.mark.parametrize("argv,option", HELP, ids=[" ".join(a) for a, _ in HELP])
def test_help_shows_defaults_and_canonical_theta_spelling(argv, option, capsys):
    try:
        code = main([*argv, "--help"])
    except SystemExit as done:
        code = done.code
    assert code in (0, None)
    text = capsys.readouterr().out
    assert "(default:" in text and option in text
    assert "(default: None)" not in text and "(default: False)" not in text
    for old in ("--Omega-m", "--Sigma-8", "--A-SN1", "--A_SN1", "--omega_m", "--sigma_8"):
        assert old not in text, f"{' '.join(argv)} --help shows {old}"
    for line in text.splitlines():  # every option has a help string: no bare option lines without text
        stripped = line.strip()
        if stripped.startswith("--") and "  " not in stripped:
            # a long option whose help starts on the next line: that next line must exist and be indented
            assert text.split(line, 1)[1].startswith("\n        "), f"{stripped!r} has no help text"


def _write_xod(path, lam, edges, area=400.0, names=("Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2")):
    xod = np.random.default_rng(0).poisson(lam).astype(np.float64)
    np.savez(path, xod=xod, cr_edges=edges[0], hr_edges=edges[1], z_edges=edges[2],
             theta=np.array([0.3, 0.8, 1.0, 1.0, 1.0, 1.0][: len(names)]), theta_names=np.array(names),
             area_deg2=area)
    return path


EDGES = (np.geomspace(0.02, 3.0, 4), np.geomspace(0.1, 2.0, 3), np.linspace(0.1, 0.5, 3))


def test_fisher_writes_provenance_and_stage_messages_old_spelling_still_works(tmp_path, capsys):
    from jaxcluster.analytic.cli import fisher_main

    # --Omega-m: the deprecated spelling, hidden but accepted (old scripts)
    assert fisher_main(["--out", str(tmp_path), "--params", "Omega_m,sigma_8", "--Omega-m", "0.31"]) == 0
    printed = capsys.readouterr().out
    assert "jaxcluster fisher: Fisher matrix of 2 parameters" in printed and "σ(Omega_m)" in printed
    res = json.loads((tmp_path / "fisher.json").read_text())
    assert res["theta0"] == [0.31, 0.8] and res["fom_Omega_m_sigma_8"] > 0
    prov = res["provenance"]
    assert prov["command"] == "fisher" and prov["theta"] == {"Omega_m": 0.31, "sigma_8": 0.8}
    assert prov["settings"]["omega_m"] == 0.31 and prov["settings"]["area_deg2"] == 200.0
    assert (tmp_path / "fisher_corner.png").stat().st_size > 10_000


def test_hmc_xod_refuses_other_bins_and_inconsistent_options(tmp_path, capsys):
    from jaxcluster.analytic.cli import hmc_main

    path = _write_xod(tmp_path / "xod.npz", np.full((3, 2, 2), 5.0), EDGES)
    bad = _write_xod(tmp_path / "bad.npz", np.full((3, 2, 2), 5.0), (EDGES[0], EDGES[1], np.linspace(0.1, 0.6, 3)))
    short = ["--chains", "2", "--warmup", "20", "--samples", "20", "--params", "Omega_m,sigma_8", "--no-progress"]
    # the model is built on the file's edges, so what can disagree is the cut, the options, or the XOD's shape
    with pytest.raises(SystemExit, match="lowest CR edge"):
        hmc_main(["--out", str(tmp_path / "o"), "--xod", str(path), "--cr-cut", "0.05", *short])
    with pytest.raises(SystemExit, match="--index"):
        hmc_main(["--out", str(tmp_path / "o"), "--index", "3", *short])
    with pytest.raises(SystemExit):  # --mock and --xod exclude each other
        hmc_main(["--out", str(tmp_path / "o"), "--xod", str(path), "--mock", *short])
    with pytest.raises(SystemExit, match="no such file"):
        hmc_main(["--out", str(tmp_path / "o"), "--xod", str(tmp_path / "missing.npz"), *short])
    capsys.readouterr()
    # the check the model itself runs: the XOD's edges against the model's
    from jaxcluster.inference.observed import check_binning, read_xod

    obs = read_xod(bad)
    with pytest.raises(ValueError, match="z bin edges"):
        check_binning(obs, (3, 2, 2), {"cr": EDGES[0], "hr": EDGES[1], "z": EDGES[2]}, what="the analytic model")
    # an XOD whose shape does not match its own edges
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, xod=np.ones((3, 2, 3)), cr_edges=EDGES[0], hr_edges=EDGES[1], z_edges=EDGES[2], area_deg2=400.0)
    with pytest.raises(SystemExit, match="shape"):
        hmc_main(["--out", str(tmp_path / "o"), "--xod", str(wrong), *short])


@pytest.mark.slow
def test_hmc_xod_writes_the_posterior_products(tmp_path, capsys):
    """A simulate-like xod.npz (θ_sim truth) fitted on 2 parameters with very short chains (~1-2 min on 2 CPUs)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxcluster.analytic import AnalyticModel
    from jaxcluster.analytic.cli import hmc_main
    from jaxcluster.analytic.counts import SurveySpec, XODBinning
    from jaxcluster.inference.posterior_files import read_posterior

    model = AnalyticModel(("Omega_m", "sigma_8"), survey=SurveySpec(area_deg2=400.0), binning=XODBinning(*EDGES))
    path = _write_xod(tmp_path / "xod.npz", np.asarray(model(model.theta0())), EDGES)
    out = tmp_path / "fit"
    assert hmc_main(["--out", str(out), "--xod", str(path), "--chains", "2", "--warmup", "20", "--samples", "20",
                     "--params", "Omega_m,sigma_8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "model comparison" in printed and "400 deg²" in printed
    for name in ("posterior.h5", "posterior_summary.ecsv", "corner.png", "hmc.json", "hmc_samples.npz",
                 "hmc_corner.png"):
        assert (out / name).is_file(), name
    samples, names, attrs = read_posterior(out / "posterior.h5")
    assert samples.shape == (40, 2) and names == ("Omega_m", "sigma_8") and attrs["method"] == "nuts (analytic)"
    np.testing.assert_allclose(attrs["truth"], [0.3, 0.8])  # every model parameter has a true value in the file
    assert attrs["provenance"]["command"] == "hmc"
    res = json.loads((out / "hmc.json").read_text())
    assert res["data"] == "xod" and res["area_deg2"] == 400.0 and res["cr_cut"] == 0.02
    assert res["provenance"]["settings"]["xod"] == str(path)
    from astropy.table import Table

    table = Table.read(out / "posterior_summary.ecsv")
    assert list(table["name"]) == ["Omega_m", "sigma_8"] and "truth" in table.colnames


@pytest.mark.slow
def test_sensitivity_smallest_run_writes_provenance_and_stages(tmp_path, capsys):
    """The smallest `sensitivity` run (2 keys, 2 boxes, no finite differences, no CR–M study): minutes on 2 CPUs."""
    args = ["sensitivity", "--out", str(tmp_path), "--area", "1", "--boxes", "2", "--cell-size", "4", "--pixel", "6",
            "--steps", "2", "--keys", "2", "--skip-fd", "--skip-scaling"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "jaxcluster sensitivity: 2 lightcones" in printed and "simulation Fisher matrix" in printed
    res = json.loads((tmp_path / "sensitivity.json").read_text())
    assert res["provenance"]["command"] == "sensitivity" and res["provenance"]["seed"] == 0
    assert set(res["provenance"]["theta"]) == {"Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2"}
    assert res["n_keys"] == 2 and "fisher" in res
    # a rerun resumes from the saved stages and says so
    assert main(args) == 0
    assert "resumed from stage_segmentations.npz" in capsys.readouterr().out


# every command that takes a seed refuses one that would alias another (jax.random.key keeps 32 bits)
SEEDED = [
    ["run"], ["simulate"], ["hmc", "--out", "x"], ["sensitivity", "--out", "x"],
    ["data", "generate", "cv", "--out", "x"], ["eldl", "train", "--cv", "a", "--lh", "b", "--out", "x"],
    ["dataset", "generate", "--simulator", "analytic", "--n", "4", "--out", "x.h5"],
    ["npe", "train", "d.h5", "--out", "x"], ["npe", "infer", "x", "--xod", "x.npz"],
    ["npe", "validate", "x", "--dataset", "d.h5"],
]


@pytest.mark.parametrize("argv", SEEDED, ids=[" ".join(a[:2]) for a in SEEDED])
@pytest.mark.parametrize("seed", ["4294967296", "-1", "1.5"])
def test_every_seed_option_refuses_values_outside_the_key_range(argv, seed, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the checkout
    try:
        code = main([*argv, "--seed", seed])
    except SystemExit as exit_:  # argparse's refusal
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and ("outside its allowed range" in err or "integer" in err)
    assert not any(tmp_path.iterdir())


def test_eldl_source_stride_must_be_odd(capsys):
    with pytest.raises(SystemExit):
        main(["eldl", "train", "--cv", "a", "--lh", "b", "--out", "x", "--source-stride", "2"])
    assert "odd integer" in capsys.readouterr().err
