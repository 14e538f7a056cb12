"""`jaxcluster data generate`: a one-sample synthetic LH set on a tiny box, and bad input."""

import json

import numpy as np
import pytest

from jaxcluster.baryons.training_sets import TABLE1_REDSHIFTS
from jaxcluster.cli import main
from jaxcluster.io import load_run, read_camels_params


@pytest.mark.slow
def test_generate_lh_writes_a_loadable_set(tmp_path, capsys):
    out = tmp_path / "lh"
    argv = ["data", "generate", "lh", "--out", str(out), "--n", "1", "--n-side", "16", "--box", "12.5",
            "--steps", "3", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "wrote 1 synthetic LH sample" in printed[0] and str(out) in printed[0]

    table = read_camels_params(out / "params.txt")
    assert list(table.names) == ["LH_0"] and np.asarray(table.theta.to_array()).shape == (1, 6)
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert spec["kind"] == "lh" and spec["n_side"] == 16 and spec["box_size"] == 12.5 and spec["n_steps"] == 3

    files = sorted((out / "LH_0").glob("*.h5"))
    assert [f.name for f in files] == sorted(f"z{z:.3f}.h5" for z in TABLE1_REDSHIFTS)
    for z in TABLE1_REDSHIFTS:
        run = load_run(out / "LH_0" / f"z{z:.3f}.h5")
        assert run.z == pytest.approx(z)
        assert run.config.particle_shape == (16, 16, 16) and run.config.box_size == (12.5, 12.5, 12.5)
        assert run.metadata["synthetic"] is True and run.metadata["sample"] == "LH_0"
        np.testing.assert_allclose(np.asarray(run.theta.to_array()), np.asarray(table.theta.to_array())[0])
        for name in ("n_e_cm3", "T_keV", "rho_dm"):
            field = np.asarray(run.fields[name])
            assert field.shape == (16, 16, 16), name
            assert np.all(np.isfinite(field)) and np.all(field >= 0), name
        assert np.asarray(run.fields["n_e_cm3"]).max() > 0 and np.asarray(run.fields["T_keV"]).max() > 0

    # Re-running with the same options resumes: nothing left to do, nothing rewritten.
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(argv) == 0
    assert "wrote 0 synthetic LH sample" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == stamps


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--n", "0"], "--n"), (["--steps", "0"], "--steps"), (["--n-side", "4"], "--n-side"),
     (["--box", "-1"], "--box"), (["--n", "x"], "--n"), (["--gas-core-subsample", "0"], "--gas-core-subsample")],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, named):
    out = tmp_path / "never"
    assert main(["data", "generate", "lh", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxcluster: error: ") and named in err[0]
    assert not out.exists()


def test_out_holding_another_set_is_refused(tmp_path, capsys):
    (tmp_path / "spec.json").write_text('{"spec": "another one"}')
    assert main(["data", "generate", "cv", "--out", str(tmp_path), "--n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxcluster: error: ") and "--out" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


def test_usage_errors_and_help(capsys):
    assert main(["data"]) == 2
    assert capsys.readouterr().err.startswith("jaxcluster: error: ")
    assert main(["data", "generate", "hydro", "--out", "x"]) == 2
    assert main(["data", "generate", "--help"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
