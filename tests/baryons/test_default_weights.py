"""The shipped eLDL weights: they load, say what they were trained on, and paint an unseen synthetic box."""

import json
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.baryons import default_eldl
from jaxcluster.baryons.train import evaluate_eldl, load_training_boxes
from jaxcluster.baryons.training_sets import generate_training_set, lh_spec
from jaxcluster.params import ThetaSim


def test_metadata_names_the_synthetic_training_data():
    info = json.loads(resources.files("jaxcluster").joinpath("data", "eldl_default.json").read_text())
    meta = info["metadata"]
    assert info["format"] == "jaxcluster-eldl"
    assert meta["cv_spec"]["spec"]["kind"] == "cv" and meta["lh_spec"]["spec"]["kind"] == "lh"
    assert "synthetic" in meta["training_data"].lower()
    assert set(meta["best_validation_loss"]) >= {"base_n_e", "base_T", "net_n_e"}


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """One LH-like box at the training resolution (0.39 h⁻¹ Mpc), a seed and θ not in the training set."""
    spec = lh_spec(1, n_side=32, box_size=12.5, redshifts=(0.21, 0.4), seed=777, capacity=32768)
    out = tmp_path_factory.mktemp("unseen")
    # one device: on all four host devices the share would be padded with three discarded copies of the box
    generate_training_set(out, spec, progress=False, devices=jax.devices()[:1])
    return out


@pytest.mark.parametrize("z", [0.21, 0.4])
def test_default_eldl_paints_an_unseen_box(unseen, z):
    model = default_eldl()
    boxes = load_training_boxes(unseen, z)
    m = evaluate_eldl(model, boxes, validation_fraction=0.99)
    # Figures measured on held-out boxes when the weights were made are in
    # eldl_default.json; here a fresh, smaller box must still be in range.
    assert 0.2 < m["emissivity_ratio"] < 5.0
    assert m["n_e_log_corr"] > 0.5


def test_default_eldl_is_differentiable_in_theta(unseen):
    model = default_eldl()
    boxes = load_training_boxes(unseen, 0.21)

    @jax.jit
    def total(a_sn1):
        th = ThetaSim(0.3, 0.8, a_sn1, 1.0, 1.0, 1.0)
        n_e, T = model(boxes.pos[0], th, 0.21, boxes.box_size, boxes.mesh_shape)
        return jnp.log(jnp.sum(n_e**2 * jnp.sqrt(T)))

    g = float(jax.jit(jax.grad(total))(jnp.asarray(1.0)))
    h = 1e-3
    fd = (float(total(jnp.asarray(1.0 + h))) - float(total(jnp.asarray(1.0 - h)))) / (2 * h)
    assert np.isfinite(g) and g == pytest.approx(fd, rel=0.05, abs=1e-4)
