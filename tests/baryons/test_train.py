"""Staged eLDL training on tiny synthetic sets: losses go down, checkpoints resume exactly, weights round-trip."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.baryons import ExtendedLDL
from jaxcluster.baryons.train import TrainingConfig, _fit_adam, _fit_lbfgs, fit_activation, load_training_boxes, main
from jaxcluster.baryons.training_sets import cv_spec, generate_training_set, lh_spec
from jaxcluster.baryons.weights import load_eldl, save_eldl

TINY = dict(n_side=16, box_size=12.5, redshifts=(0.21, 0.33), n_steps=3, max_halos=8, capacity=4096)


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


@pytest.mark.slow
def test_cli_trains_all_stages_and_weights_round_trip(sets, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--cv", str(sets / "cv"), "--lh", str(sets / "lh"), "--out", str(out), "--base-iterations", "2",
            "--epochs", "1", "--batch-size", "2", "--no-progress", "--gradient", "fd4", "--source-stride", "3"]
    assert main(args) == 0
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
    assert main(["--cv", str(sets / "cv"), "--lh", str(sets / "lh"), "--out", str(out), "--source-stride", "0"]) == 2
    assert "--source-stride" in capsys.readouterr().err


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
