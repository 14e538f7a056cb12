"""Property test (issue #26): every configuration class refuses any one field out of range, naming it.

For each class, a valid configuration is built; hypothesis then sets one
field to a value out of its allowed range (negative, zero, fractional where
an integer is required, NaN, ±inf, too large, or a random number outside
the range) and asserts a `ValueError` whose message contains the field's
name. Classes whose values may be traced are checked with concrete values
here (their `eqx.error_if` paths are tested in `test_traced_values_raise`).
"""

from __future__ import annotations

import argparse
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from jaxcluster.analytic import AnalyticModel, SurveySpec, XODBinning
from jaxcluster.clihelp import seed_type
from jaxcluster.cosmology import COSMO_RANGES, Cosmology
from jaxcluster.fields.cutouts import CutoutConfig
from jaxcluster.fields.training import FitConfig
from jaxcluster.halos.so import SOFinder
from jaxcluster.inference.datasets import BoxPrior
from jaxcluster.inference.npe import TrainConfig
from jaxcluster.inference.npe_run import NPESettings
from jaxcluster.nbody.config import PMConfig
from jaxcluster.params import PRIOR_BOUNDS, ThetaSim
from jaxcluster.survey.detect import DetectionConfig
from jaxcluster.survey.pipeline import SurveyConfig

INF = math.inf


def _spec(low, high, *, integer=False, low_open=False, high_open=False):
    return dict(low=low, high=high, integer=integer, low_open=low_open, high_open=high_open)


# class -> (constructor, valid kwargs, {field: allowed range})
CASES = {
    "PMConfig": (PMConfig, dict(box_size=10.0, particle_shape=8, mesh_shape=16), {
        "box_size": _spec(0, INF, low_open=True),
        "particle_shape": _spec(2, 2**31 - 1, integer=True),
        "mesh_shape": _spec(1, 2**31 - 1, integer=True),
    }),
    "SurveyConfig": (SurveyConfig, dict(area_deg2=1.0, cell_size=4.0, n_boxes=2, pixel_arcmin=3.0), {
        "area_deg2": _spec(0, 400, low_open=True),
        "z_max": _spec(0.1, 3, low_open=True),
        "n_boxes": _spec(1, 64, integer=True),
        "cell_size": _spec(0, 50, low_open=True),
        "pixel_arcmin": _spec(0, 60, low_open=True),
        "n_lightcones": _spec(1, 1000, integer=True),
        "n_steps": _spec(1, 1000, integer=True),
        "mesh_factor": _spec(1, 4, integer=True),
        "threshold": _spec(0, INF, low_open=True),
        "min_area": _spec(1, 10**6, integer=True),
        "max_sources": _spec(1, 65535, integer=True),
        "deblend_cont": _spec(0, 1),
        "cr_min": _spec(0, 1e6, low_open=True),
        "softness": _spec(1e-12, 1),
    }),
    "DetectionConfig": (DetectionConfig, dict(), {
        "threshold": _spec(0, INF, low_open=True),
        "min_area": _spec(1, 10**6, integer=True),
        "deblend_nthresh": _spec(1, 256, integer=True),
        "deblend_cont": _spec(0, 1),
        "max_sources": _spec(1, 65535, integer=True),
    }),
    "ThetaSim": (ThetaSim, dict(), {n: _spec(*PRIOR_BOUNDS[n]) for n in PRIOR_BOUNDS}),
    "Cosmology": (Cosmology, dict(), {n: _spec(*r) for n, r in COSMO_RANGES.items() if n != "Omega_b"}),
    "SurveySpec": (SurveySpec, dict(), {
        "area_deg2": _spec(0, 41253, low_open=True),
        "cr_cut": _spec(0, INF, low_open=True, high_open=True),
        "sigma_log10_cr": _spec(0, INF, high_open=True),
        "sigma_log10_hr": _spec(0, INF, low_open=True, high_open=True),
        "log10_M_max": _spec(12.5, 17, low_open=True),
        "n_mass": _spec(1, 10_000, integer=True),
        "n_z_per_bin": _spec(1, 10_000, integer=True),
        "n_gh": _spec(1, 10_000, integer=True),
    }),
    "SOFinder": (SOFinder, dict(box_size=30.0, mesh_shape=16, r_max=1e-6), {
        "box_size": _spec(0, INF, low_open=True),
        "mesh_shape": _spec(4, 1024, integer=True),
        "max_halos": _spec(1, 2**20, integer=True),
        "capacity": _spec(1, 2**31 - 1, integer=True),
        "r_max": _spec(0, 10, low_open=True),
        "peak_overdensity": _spec(1, INF, low_open=True),
        "smoothing": _spec(0, 1000),
        "min_particles": _spec(1, 2**31 - 1, integer=True),
        "max_neighbours": _spec(1, 2**31 - 1, integer=True),
    }),
    "CutoutConfig": (CutoutConfig, dict(), {
        "n_pix": _spec(4, 4096, integer=True),
        "pixel_size": _spec(0, 1e4, low_open=True),
        "depth": _spec(0, 1e5, low_open=True),
    }),
    "FitConfig": (FitConfig, dict(), {
        "max_steps": _spec(1, 2**31 - 1, integer=True),
        "batch_size": _spec(1, 2**31 - 1, integer=True),
        "eval_every": _spec(1, 2**31 - 1, integer=True),
        "patience": _spec(1, 2**31 - 1, integer=True),
        "learning_rate": _spec(0, 1e6, low_open=True),
        "clip_norm": _spec(0, 1e6, low_open=True),
        "seed": _spec(0, 2**32 - 1, integer=True),
    }),
    "TrainConfig": (TrainConfig, dict(), {
        "n_components": _spec(1, INF, integer=True),
        "width": _spec(1, INF, integer=True),
        "batch_size": _spec(1, INF, integer=True),
        "validation_fraction": _spec(0, 1, low_open=True, high_open=True),
        "learning_rate": _spec(0, INF, low_open=True, high_open=True),
        "clip_norm": _spec(0, INF, low_open=True, high_open=True),
    }),
    "NPESettings": (NPESettings, dict(), {
        "n_members": _spec(1, INF, integer=True),
        "epochs": _spec(1, INF, integer=True),
        "compressor_width": _spec(1, INF, integer=True),
        "test_fraction": _spec(0, 0.5, high_open=True),
        "learning_rate": _spec(0, INF, low_open=True, high_open=True),
        "n_draws": _spec(1, INF, integer=True),
        "seed": _spec(0, 2**32 - 1, integer=True),
    }),
}


def _bad_values(spec) -> list:
    """Values outside `spec`: below, at an open end, above, fractional, NaN, ±inf."""
    lo, hi = spec["low"], spec["high"]
    out = [math.nan, -INF, lo - 1, -abs(lo) - 1e3]
    if spec["low_open"]:
        out.append(lo)
    if math.isfinite(hi):
        out += [hi * 2 + 1, INF]
    elif spec["high_open"]:
        out.append(INF)
    if spec["integer"]:
        out.append(lo + 0.5)
    return out


ALL = [(c, f) for c, (_, _, fields) in CASES.items() for f in fields]


# The test suite runs with jaxtyping's import hook (``--jaxtyping-packages``): a value of the wrong Python type
# for its annotation (a float for an ``int`` parameter) is refused by the type checker before the constructor
# runs; its message names the parameter as well. Without the hook (the users' case) our own check refuses it.
_REFUSALS = (ValueError, TypeCheckError)


def _expect_refused(cls_name: str, field: str, value) -> None:
    make, valid, fields = CASES[cls_name]
    kwargs = dict(valid)
    spec = fields[field]
    if spec["integer"] and isinstance(value, float) and math.isfinite(value) and value == round(value):
        value = int(value)  # an integer out of range, not a float
    elif not spec["integer"]:
        value = float(value)
    kwargs[field] = value
    with pytest.raises(_REFUSALS) as err:
        make(**kwargs)
    assert field in str(err.value), f"{cls_name}({field}={value!r}): message does not name {field}: {err.value}"


def test_valid_configurations_are_accepted():
    for cls_name, (make, valid, _) in CASES.items():
        make(**valid)


@pytest.mark.parametrize("cls_name,field", ALL, ids=[f"{c}.{f}" for c, f in ALL])
def test_each_edge_value_is_refused(cls_name, field):
    for value in _bad_values(CASES[cls_name][2][field]):
        _expect_refused(cls_name, field, value)


@st.composite
def _random_invalid(draw):
    cls_name, field = draw(st.sampled_from(ALL))
    spec = CASES[cls_name][2][field]
    lo, hi = spec["low"], spec["high"]
    choices = [st.sampled_from(_bad_values(spec)),
               st.floats(max_value=lo, exclude_max=not spec["low_open"], allow_nan=False, min_value=-1e12)]
    if math.isfinite(hi):
        choices.append(st.floats(min_value=hi, exclude_min=not spec["high_open"], max_value=1e12, allow_nan=False))
    if spec["integer"] and math.isfinite(hi):
        choices.append(st.floats(min_value=lo, max_value=min(hi, 1e9)).filter(lambda v: v != round(v)))
    return cls_name, field, draw(st.one_of(*choices))


@settings(max_examples=300, deadline=None)
@given(_random_invalid())
def test_random_invalid_configurations_are_refused(case):
    cls_name, field, value = case
    _expect_refused(cls_name, field, value)


def test_box_prior_and_binning_refuse_bad_values():
    for kwargs, name in ((dict(low=[math.nan]), "a"), (dict(high=[INF]), "a"), (dict(low=[2.0]), "a"),
                         (dict(low=[-1.0], log=[True]), "a")):
        args = dict(names=["a"], low=[0.0], high=[1.0], log=None) | kwargs
        with pytest.raises(ValueError, match=name):
            BoxPrior(**args)
    for edges in ([math.nan, 1.0], [1.0, 0.5], [-1.0, 1.0], [1.0], [1.0, INF]):
        with pytest.raises(ValueError, match="cr_edges"):
            XODBinning(cr_edges=edges)


def test_analytic_model_refuses_impossible_theta():
    model = AnalyticModel()
    theta0 = np.asarray(model.theta0())
    for i, value in ((0, -0.1), (0, 1.5), (0, math.nan), (1, 0.0), (3, -1.0), (2, INF), (5, math.nan)):
        theta = theta0.copy()
        theta[i] = value
        with pytest.raises(ValueError, match=model.names[i]):
            model(jnp.asarray(theta))


def test_traced_values_raise():
    """Under jit the same checks go through `eqx.error_if` (a runtime error naming the parameter)."""
    model = AnalyticModel(("Omega_m", "sigma_8"))
    f = eqx.filter_jit(lambda m, t: m(t))
    assert np.isfinite(np.asarray(f(model, jnp.array([0.3, 0.8])))).all()
    for theta, name in ((jnp.array([-0.2, 0.8]), "Omega_m"), (jnp.array([0.3, math.nan]), "sigma_8")):
        with pytest.raises(Exception, match=f"{name} is outside its allowed range"):
            f(model, theta)
    cosmo = eqx.filter_jit(lambda c: c.check())
    bad = eqx.tree_at(lambda c: c.w0, Cosmology(), jnp.asarray(5.0))
    with pytest.raises(Exception, match="w0 is outside its allowed range"):
        cosmo(bad)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)))
def test_seed_type_refuses_aliasing_seeds(seed):
    with pytest.raises(argparse.ArgumentTypeError, match="seed"):
        seed_type(str(seed))


def test_seed_type_accepts_the_key_range():
    assert seed_type("0") == 0 and seed_type(str(2**32 - 1)) == 2**32 - 1
    for text in ("1.5", "abc", "", "1e3"):
        with pytest.raises(argparse.ArgumentTypeError, match="seed"):
            seed_type(text)
