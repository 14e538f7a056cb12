"""`SurveySpec(selection="xxl_c1")`: the injection–recovery selection inside the analytic XOD (#23).

All tests share one small quadrature (`_SMALL`) and, for the "xxl_c1" path, one
compiled function: the synthetic tables are the shipped table with its logistic
parameters replaced (same shapes, so the same executable).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import jaxtyping
import pytest

from jaxcluster.analytic import ScalingRelations, SurveySpec, XODBinning, expected_xod
from jaxcluster.analytic.cli import _fisher_parser, _hmc_parser, _model
from jaxcluster.cosmology import Cosmology
from jaxcluster.observation.selection import load_selection_table, selection_probability

_SMALL = dict(area_deg2=200.0, n_mass=24, n_z_per_bin=3, n_gh=3, n_sigma_knots=8)
_BINS = XODBinning(np.geomspace(0.02, 3.0, 5), np.geomspace(0.1, 2.0, 4), np.linspace(0.1, 0.5, 3))
# λ of the _SMALL "cut" spec summed over HR, per (CR, z), computed by the code before the option
# existed (commit 15a441b), float64 on CPU: the default path must not move.
_CUT_BEFORE_TABLE = np.array([
    [86.60940134852059, 40.97140606495463],
    [20.50311338762, 5.3540137188096635],
    [3.36111276119891, 0.36311365309547877],
    [0.3372037302810215, 0.01004693591260524],
])

_xod = eqx.filter_jit(expected_xod)


_SEL = SurveySpec(**_SMALL, selection="xxl_c1")  # the one "xxl_c1" spec: one compiled executable
_F_AP = _SEL.aperture_fraction  # the table sees CR_tot = CR_500 / f_ap


def _step_table(cr_step: float):
    """The shipped table's shapes with P = 1 above `cr_step` [counts s⁻¹] and 0 below (any r_c, z)."""
    t = load_selection_table()
    shape, dtype = t.mu.shape, t.mu.dtype  # the shipped table's avals: the same compiled executable
    return eqx.tree_at(lambda s: (s.mu, s.log_width, s.logit_pmax), t,
                       tuple(jnp.full(shape, v, dtype) for v in (math.log10(cr_step), math.log(1e-5), 60.0)))


@pytest.fixture(scope="module")
def fid(tables):
    return Cosmology(), ScalingRelations(), tables


def test_default_is_the_cut_and_unchanged(fid):
    assert SurveySpec().selection == "cut"
    lam = np.asarray(_xod(*fid, SurveySpec(**_SMALL), _BINS))
    np.testing.assert_allclose(lam.sum(axis=1), _CUT_BEFORE_TABLE, rtol=1e-12)


def test_step_selection_reproduces_the_cut(fid):
    """P = step at cr_cut (in CR_500; σ_CR = 0) is the hard cut, to quadrature accuracy."""
    cut = np.asarray(_xod(*fid, SurveySpec(**_SMALL), _BINS))
    step = np.asarray(_xod(*fid, _SEL, _BINS, _step_table(0.02 / _F_AP)))
    big = cut > 1e-3
    np.testing.assert_allclose(step[big], cut[big], rtol=1e-6)
    np.testing.assert_allclose(step.sum(), cut.sum(), rtol=1e-7)


def test_shipped_table_lowers_counts_most_at_low_cr(fid):
    cut = np.asarray(_xod(*fid, SurveySpec(**_SMALL), _BINS))
    lam = np.asarray(_xod(*fid, _SEL, _BINS, load_selection_table()))
    assert lam.shape == cut.shape and np.all(np.isfinite(lam)) and np.all(lam >= 0)
    # P ≤ 1 and the cut sits at the lowest edge: every bin loses clusters, none gains
    assert np.all(lam <= cut * (1 + 1e-9) + 1e-12)
    ratio = lam.sum(axis=(1, 2)) / cut.sum(axis=(1, 2))  # per CR bin
    assert ratio[0] < ratio[1] and 0.0 < ratio[0] < 1.0, ratio
    # bright bins (CR ≫ the logistics' μ): the ratio is the table's plateau p_max, between its extremes
    pmax = np.asarray(jax.nn.sigmoid(load_selection_table().logit_pmax))
    assert pmax.min() - 0.02 < ratio[-1] < pmax.max() + 0.02, (ratio, pmax)
    # P(C1) rises with CR at fixed (r_c, z)
    p = np.asarray(selection_probability(load_selection_table(), jnp.geomspace(0.003, 1.0, 20), 20.0, 0.3))
    assert np.all(np.diff(p) >= 0) and p[0] < 0.5 * p[-1]
    # f_ap of a projected β = 2/3 profile inside R500 = r_c / 0.24: 1 − (1 + 0.24⁻²)^(−1/2)
    assert _F_AP == pytest.approx(0.76663, abs=1e-5)
    assert SurveySpec(selection="xxl_c1", selection_total_flux=False).aperture_fraction == 1.0


def test_gradient_in_omega_m_matches_finite_differences(fid):
    cosmo, sr, tables = fid
    table = load_selection_table()

    def xod(om):
        return _xod(eqx.tree_at(lambda c: c.Omega_m, cosmo, om), sr, tables, _SEL, _BINS, table)

    # forward mode (one jvp) compiles faster than grad; the finite differences reuse the forward executable
    lam, dlam = eqx.filter_jit(lambda om: jax.jvp(xod, (om,), (jnp.ones_like(om),)))(jnp.asarray(0.3))
    g = float(jnp.sum(dlam / (lam + 1.0)))
    h = 1e-5
    fd = float(jnp.sum(jnp.log(xod(jnp.asarray(0.3 + h)) + 1.0) - jnp.log(xod(jnp.asarray(0.3 - h)) + 1.0))) / (2 * h)
    assert math.isfinite(g) and g != 0.0
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_bad_table_is_caught_inside_jit(fid):
    bad = eqx.tree_at(lambda s: s.mu, _step_table(0.02), jnp.full_like(load_selection_table().mu, jnp.nan))
    with pytest.raises(Exception, match="selection probability"):
        jax.block_until_ready(_xod(*fid, _SEL, _BINS, bad))


@pytest.mark.parametrize("kwargs, name", [
    (dict(selection="xxl"), "selection"),
    (dict(selection="xxl_c1", core_radius_r500=0.0), "core_radius_r500"),
    (dict(selection="xxl_c1", core_radius_r500=-0.2), "core_radius_r500"),
    (dict(selection="xxl_c1", core_radius_r500=float("nan")), "core_radius_r500"),
    (dict(selection="xxl_c1", n_cr_quad=1), "n_cr_quad"),
    (dict(selection="xxl_c1", n_cr_quad=4.0), "n_cr_quad"),
    (dict(selection="xxl_c1", selection_total_flux="yes"), "selection_total_flux"),
    (dict(selection="xxl_c1", mdef="200m"), "mdef"),
    (dict(selection_path="table.npz"), "selection_path"),
])
def test_bad_options_are_refused(kwargs, name):
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match=name):  # jaxtyping first when active
        SurveySpec(**kwargs)


def test_cli_selection_option(tmp_path):
    parser = _fisher_parser()
    model = _model(parser.parse_args(["--out", str(tmp_path), "--selection", "xxl_c1", "--params", "Omega_m"]))
    assert model.survey.selection == "xxl_c1"
    assert _model(parser.parse_args(["--out", str(tmp_path)])).survey.selection == "cut"
    hmc = _hmc_parser().parse_args(["--out", str(tmp_path), "--selection", "xxl_c1", "--chains", "1"])
    assert _model(hmc).survey.selection == "xxl_c1"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(tmp_path), "--selection", "c2"])
    with pytest.raises(SystemExit, match="cr-cut"):
        _model(parser.parse_args(["--out", str(tmp_path), "--selection", "xxl_c1", "--cr-cut", "0.03"]))


@pytest.mark.slow
def test_measurement_error_kernel_matches_the_cut(fid):
    """σ_CR > 0: with P = 1 for every cluster that can be measured in the bins, the true-CR integral with the
    measurement kernel (and its 6 σ tails) equals the cut path's exact log-normal (measured 2e-9)."""
    cut = np.asarray(_xod(*fid, SurveySpec(**_SMALL, sigma_log10_cr=0.05), _BINS))
    lam = np.asarray(_xod(*fid, SurveySpec(**_SMALL, sigma_log10_cr=0.05, selection="xxl_c1"), _BINS,
                          _step_table(1e-4)))
    big = cut > 1e-3
    np.testing.assert_allclose(lam[big], cut[big], rtol=1e-6)


@pytest.mark.slow
def test_cli_fisher_runs_with_xxl_c1(tmp_path):
    import json

    from jaxcluster.analytic.cli import fisher_main

    assert fisher_main(["--out", str(tmp_path), "--selection", "xxl_c1", "--params", "Omega_m,sigma_8"]) == 0
    res = json.loads((tmp_path / "fisher.json").read_text())
    assert res["selection"] == "xxl_c1" and 50 < res["total_counts"] < 500
