"""Staged eLDL training on tiny synthetic sets: losses go down, checkpoints resume exactly, weights round-trip."""

import json
import shutil

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.baryons import ExtendedLDL
from jaxcluster.baryons.train import TrainingConfig, _fit_adam, _fit_lbfgs, fit_activation, load_training_boxes, main
from jaxcluster.baryons.training_sets import cv_spec, generate_training_set, lh_spec
from jaxcluster.baryons.weights import load_eldl, save_eldl
from tests.faults import KilledAtWrite, count_writes, files_bytes, kill_at_write

# max_neighbours: all 16³ particles (a halo cannot have more); the same in both sets, so that the CV and the
# LH set share one compiled simulation (cv_spec's and lh_spec's defaults differ: 131072 and 65536)
TINY = dict(n_side=16, box_size=12.5, redshifts=(0.21, 0.33), n_steps=3, max_halos=8, capacity=4096, max_neighbours=4096)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eldl")
    generate_training_set(root / "cv", cv_spec(2, **TINY), progress=False)
    generate_training_set(root / "lh", lh_spec(4, **TINY), progress=False)
    return root


def _leaves_equal(a, b, rtol=1e-6):
    la, lb = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array)), jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    return len(la) == len(lb) and all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-9) for x, y in zip(la, lb))


def test_training_boxes_are_normalised(sets):
    boxes = load_training_boxes(sets / "lh", 0.21)
    assert boxes.n_box == 4 and boxes.mesh_shape == (16, 16, 16) and boxes.names[0] == "LH_0"
    assert np.allclose(np.asarray(boxes.rho_dm).mean(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert 0.5 < float(boxes.n_e.mean()) < 2.0  # n_e in units of the cosmic mean
    with pytest.raises(ValueError, match="no training files"):
        load_training_boxes(sets / "lh", 0.5)


def test_fit_activation_recovers_a_power_law(sets):
    # Truth made an exact power law of a given density: the fit returns its b1 and mu
    # (and for n_e puts the threshold b0 at the 20th percentile of the brightest densities).
    boxes = load_training_boxes(sets / "cv", 0.21)
    rng = np.random.default_rng(0)
    dens = [np.exp(rng.normal(0.0, 1.5, boxes.mesh_shape)) for _ in range(boxes.n_box)]
    truth = eqx.tree_at(lambda b: (b.n_e, b.T_keV), boxes,
                        (jnp.asarray(np.stack([3.0 * d**1.5 for d in dens]), jnp.float32),
                         jnp.asarray(np.stack([2.0 * d**0.7 for d in dens]), jnp.float32)))
    for field, b1, mu in (("n_e", 3.0, 1.5), ("T", 2.0, 0.7)):
        act = fit_activation(iter(dens), truth, field)
        assert float(act.b1) == pytest.approx(b1, rel=1e-4) and float(act.mu) == pytest.approx(mu, abs=1e-4)
        assert (float(act.b0) > 0) == (field == "n_e")


@pytest.mark.parametrize("kind", ["lbfgs", "adam"])
def test_stage_resumes_exactly_from_its_checkpoint(sets, tmp_path, kind):
    model = ExtendedLDL.init(jax.random.key(0), redshifts=(0.21, 0.33))
    if kind == "lbfgs":
        boxes = load_training_boxes(sets / "cv", 0.21)
        fit = lambda cfg, d: _fit_lbfgs("s", model, lambda e: e.n_e_base, "n_e", boxes, cfg, d, False)
        short, full = TrainingConfig(base_iterations=1, checkpoint_every=1), TrainingConfig(base_iterations=2, checkpoint_every=1)
    else:
        boxes = load_training_boxes(sets / "lh", 0.21)
        fit = lambda cfg, d: _fit_adam("s", model, lambda e: e.n_e_net, "n_e", boxes, cfg, d, False, None)
        short = TrainingConfig(hyper_epochs=1, batch_size=2, learning_rate=1e-2)
        full = TrainingConfig(hyper_epochs=3, batch_size=2, learning_rate=1e-2)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    fit(short, tmp_path / "a")  # "killed" after the short run: its checkpoint stays
    resumed, m1 = fit(full, tmp_path / "a")
    straight, m2 = fit(full, tmp_path / "b")
    assert _leaves_equal(resumed, straight)
    assert len(m1["history"]) == len(m2["history"])
    for h1, h2 in zip(m1["history"], m2["history"]):
        assert h1["validation"] == pytest.approx(h2["validation"], rel=1e-5)
    hist = m2["history"]
    assert m2["best_validation"] == pytest.approx(min(h["validation"] for h in hist))


def test_cli_trains_all_stages_and_weights_round_trip(sets, trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    args = _train_args(sets, out)
    info = json.loads((out / "eldl.json").read_text())
    assert info["structure"]["redshifts"] == [0.21, 0.33]
    assert (info["structure"]["gradient"], info["structure"]["source_stride"]) == ("fd4", 3)
    assert set(info["metadata"]["best_validation_loss"]) == {"base_n_e", "base_T", "net_n_e", "net_T_z0.210", "net_T_z0.330"}
    assert info["metadata"]["lh_spec"]["spec"]["kind"] == "lh"
    prov = info["metadata"]["provenance"]
    assert prov["command"] == "eldl train" and prov["seed"] == 0 and prov["settings"]["gradient"] == "fd4"
    model, _ = load_eldl(out / "eldl.eqx")
    assert {(d.gradient, d.source_stride) for d in model.T_base.displacements} == {("fd4", 3)}
    # A rerun finds every stage done and reproduces the same weights.
    assert main(args) == 0
    again, _ = load_eldl(out / "eldl.eqx")
    assert _leaves_equal(model, again, rtol=0)
    boxes = load_training_boxes(sets / "lh", 0.33)
    theta = jax.tree.map(lambda v: v[0], boxes.theta)
    n_e, T = model(boxes.pos[0], theta, 0.33, boxes.box_size, boxes.mesh_shape)
    assert np.all(np.isfinite(np.asarray(n_e))) and np.all(np.asarray(T) >= 0)
    assert main(["--cv", str(tmp_path / "none"), "--lh", str(sets / "lh"), "--out", str(out)]) == 2
    assert "--cv" in capsys.readouterr().err
    for stride in ("0", "2"):  # refused by the argument parser: an odd integer >= 1
        with pytest.raises(SystemExit) as exit_:
            main(["--cv", str(sets / "cv"), "--lh", str(sets / "lh"), "--out", str(out), "--source-stride", stride])
        assert exit_.value.code == 2 and "--source-stride" in capsys.readouterr().err


def test_weights_round_trip_and_errors(tmp_path):
    model = ExtendedLDL.init(jax.random.key(3), redshifts=(0.1, 0.2))
    model = jax.tree.map(lambda v: v + 0.01 if eqx.is_inexact_array(v) else v, model)
    save_eldl(tmp_path / "w.eqx", model, {"filter": "bspline", "redshifts": [0.1, 0.2]}, {"note": "test"})
    back, info = load_eldl(tmp_path / "w.eqx")
    # weights come back as float32, whatever precision they were saved in (here float64, x64 on)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(eqx.filter(back, eqx.is_inexact_array)))
    assert _leaves_equal(model, back, rtol=1e-6) and info["metadata"]["note"] == "test"
    with pytest.raises(ValueError, match="need both"):
        load_eldl(tmp_path / "missing.eqx")
    (tmp_path / "w.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a jaxcluster-eldl"):
        load_eldl(tmp_path / "w.eqx")


# ------------------------------------------------- kills, resumes, refusals (issue #26)

FAST_CLI = ["--base-iterations", "2", "--epochs", "1", "--batch-size", "2", "--no-progress", "--gradient", "fd4",
            "--source-stride", "3"]


def _train_args(sets, out, *extra):
    return ["--cv", str(sets / "cv"), "--lh", str(sets / "lh"), "--out", str(out), *FAST_CLI, *extra]


@pytest.fixture(scope="module")
def trained(sets, tmp_path_factory):
    """An uninterrupted tiny run, and the targets of its writes in order."""
    mp = pytest.MonkeyPatch()
    out = tmp_path_factory.mktemp("eldl_ref") / "run"
    with count_writes(mp) as writes:
        assert main(_train_args(sets, out)) == 0
    mp.undo()
    return out, list(writes)


def _same_training_bits(a, b):
    """Weights, checkpoints and settings byte for byte (eldl.json differs only in its timing and provenance date)."""
    fa, fb = files_bytes(a, skip=("eldl.json",)), files_bytes(b, skip=("eldl.json",))
    assert fa.keys() == fb.keys()
    assert [k for k in fa if fa[k] != fb[k]] == []
    ja, jb = (json.loads((d / "eldl.json").read_text()) for d in (a, b))
    for j in (ja, jb):
        del j["metadata"]["train_seconds"], j["metadata"]["provenance"]
    assert ja == jb


def _kill_and_resume(sets, trained, tmp_path, monkeypatch, ns):
    ref, writes = trained
    for n in ns:
        out = tmp_path / f"k{n}"
        with kill_at_write(monkeypatch, n) as seen, pytest.raises(KilledAtWrite):
            main(_train_args(sets, out))
        assert seen[-1].name == writes[n - 1].name  # the same write order as the uninterrupted run
        assert main(_train_args(sets, out)) == 0
        _same_training_bits(ref, out)


def test_eldl_train_writes_in_a_known_order(trained):
    _, writes = trained
    names = [p.name for p in writes]
    assert names[0] == "settings.json" and names[-2:] == ["eldl.json", "eldl.eqx"]
    assert names.count("base_n_e.done.eqx") == 1 and not any(n.endswith(".metrics.json") for n in names)


def test_eldl_train_resumes_after_a_kill_at_every_write(sets, trained, tmp_path, monkeypatch):
    """A kill at each write (settings, every checkpoint and done file, the JSON, the weights), then a rerun: the same bits."""
    _kill_and_resume(sets, trained, tmp_path, monkeypatch, range(1, len(trained[1]) + 1))


def test_eldl_train_refuses_other_settings_or_data(sets, trained, tmp_path, capsys):
    ref, _ = trained
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    for extra, named in ((["--learning-rate", "0.01"], "learning_rate: 0.003 there, 0.01 requested"),
                         (["--epochs", "3"], "hyper_epochs: 1 there, 3 requested"),
                         (["--seed", "1"], "seed: 0 there, 1 requested"),
                         (["--max-lh-boxes", "2"], "lh_sha256")):
        capsys.readouterr()
        assert main(_train_args(sets, out, *extra)) == 2
        err = capsys.readouterr().err
        assert named in err and str(out) in err, err
    # another CV set of the same layout (one file changed) is another input
    cv2 = tmp_path / "cv2"
    shutil.copytree(sets / "cv", cv2)
    victim = sorted(cv2.glob("*/z0.210.h5"))[0]
    with h5py.File(victim, "r+") as f:
        f["fields/T_keV"][0, 0, 0] += 1.0
    args = _train_args(sets, out)
    args[1] = str(cv2)
    assert main(args) == 2 and "cv_sha256" in capsys.readouterr().err
    # the refusals wrote nothing: the folder still resumes to the same bits
    assert main(_train_args(sets, out)) == 0
    _same_training_bits(ref, out)


def test_eldl_train_refuses_corrupt_or_unfinished_inputs(sets, trained, tmp_path, capsys):
    ref, _ = trained
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    done = out / "checkpoints" / "net_n_e.done.eqx"
    done.write_bytes(done.read_bytes()[:-100])
    assert main(_train_args(sets, out)) == 2
    assert "net_n_e.done.eqx" in capsys.readouterr().err
    (out / "settings.json").write_text("{")
    assert main(_train_args(sets, out)) == 2
    assert "settings.json is corrupt" in capsys.readouterr().err
    # a set whose generation was killed: refused, naming the folder
    cv2 = tmp_path / "cv2"
    shutil.copytree(sets / "cv", cv2)
    sorted(cv2.glob("*/z0.330.h5"))[-1].unlink()
    args = _train_args(sets, tmp_path / "new")
    args[1] = str(cv2)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unfinished" in err and str(cv2) in err and not (tmp_path / "new").exists()


def test_eldl_files_are_checked_against_each_other(trained, tmp_path):
    ref, _ = trained
    for name in ("eldl.eqx", "eldl.json"):
        shutil.copy(ref / name, tmp_path / name)
    model, info = load_eldl(tmp_path / "eldl.eqx")
    assert info["format_version"] == 2 and len(info["weights_sha256"]) == 64
    # new weights beside old metadata (a kill between the two writes of an older save_eldl order)
    other = jax.tree.map(lambda v: v * 2 if eqx.is_inexact_array(v) else v, model)
    eqx.tree_serialise_leaves(tmp_path / "eldl.eqx", other)
    with pytest.raises(ValueError, match="is not the weights .*eldl.json describes"):
        load_eldl(tmp_path / "eldl.eqx")
    shutil.copy(ref / "eldl.eqx", tmp_path / "eldl.eqx")
    (tmp_path / "eldl.json").write_text((ref / "eldl.json").read_text()[:50])
    with pytest.raises(ValueError, match=r"eldl.json is not valid JSON"):
        load_eldl(tmp_path / "eldl.eqx")
    # a JSON whose redshift list does not match the weights (digest left out: a version-1 file)
    info1 = json.loads((ref / "eldl.json").read_text())
    info1["format_version"], info1["structure"]["redshifts"] = 1, [0.21, 0.33, 0.4]
    del info1["weights_sha256"]
    (tmp_path / "eldl.json").write_text(json.dumps(info1))
    with pytest.raises(ValueError, match=r"eldl.eqx does not hold the weights of the structure"):
        load_eldl(tmp_path / "eldl.eqx")
    info1["structure"]["redshifts"] = [0.21]
    (tmp_path / "eldl.json").write_text(json.dumps(info1))
    with pytest.raises(ValueError, match=r"eldl.eqx does not hold the weights of the structure"):
        load_eldl(tmp_path / "eldl.eqx")
