import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxcluster.params import FIDUCIAL, PARAM_NAMES, PRIOR_BOUNDS, ThetaSim


def test_fiducial_and_order():
    th = ThetaSim.fiducial()
    np.testing.assert_allclose(th.to_array(), [0.3, 0.8, 1, 1, 1, 1])
    assert PARAM_NAMES == ("Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2")
    assert [FIDUCIAL[n] for n in PARAM_NAMES] == [0.3, 0.8, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", PARAM_NAMES)
def test_out_of_prior_raises_naming_parameter(name):
    lo, hi = PRIOR_BOUNDS[name]
    with pytest.raises(ValueError, match=rf"{name}.*\[{lo}, {hi}\]"):
        ThetaSim(**{name: hi * 1.01})
    with pytest.raises(ValueError, match=name):
        ThetaSim(**{name: float("nan")})


def test_check_prior_under_jit():
    f = jax.jit(lambda x: ThetaSim.from_array(x).check_prior().Omega_m)
    assert float(f(jnp.array([0.3, 0.8, 1.0, 1.0, 1.0, 1.0]))) == pytest.approx(0.3)
    with pytest.raises(Exception, match="Omega_m is outside"):
        jax.block_until_ready(f(jnp.array([0.7, 0.8, 1.0, 1.0, 1.0, 1.0])))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_unit_cube_roundtrip(u):
    th = ThetaSim.from_unit(jnp.asarray(u))
    np.testing.assert_allclose(th.to_unit(), u, atol=1e-12)


def test_prior_samples_log_uniform(getkey):
    th = ThetaSim.sample_prior(getkey(), (20000,))
    x = th.to_array()
    for i, name in enumerate(PARAM_NAMES):
        lo, hi = PRIOR_BOUNDS[name]
        assert float(x[:, i].min()) >= lo and float(x[:, i].max()) <= hi
    # ln A_SN1 uniform on [ln 1/4, ln 4]: mean 0, variance (ln 16)^2 / 12.
    lnA = np.log(np.asarray(th.A_SN1))
    assert abs(lnA.mean()) < 4 * math.log(16) / math.sqrt(12 * 20000)
    assert np.var(lnA) == pytest.approx(math.log(16) ** 2 / 12, rel=0.05)


def test_log_prior_matches_density():
    th = ThetaSim(0.2, 0.7, 2.0, 1.0, 0.5, 1.5)
    expected = (-math.log(0.4) - math.log(0.4) - math.log(2.0) - math.log(math.log(16)) - math.log(1.0)
                - math.log(math.log(4)) - math.log(0.5) - math.log(math.log(16)) - math.log(1.5) - math.log(math.log(4)))
    assert float(th.log_prior()) == pytest.approx(expected, rel=1e-12)
    outside = eqx.tree_at(lambda t: t.sigma_8, th, jnp.asarray(1.2))
    assert float(outside.log_prior()) == -np.inf


def test_vmap_and_pytree():
    x = jnp.array([[0.3, 0.8, 1, 1, 1, 1], [0.2, 0.9, 2, 1, 0.5, 1.5]], dtype=float)
    lp = jax.vmap(lambda v: ThetaSim.from_array(v).log_prior())(x)
    assert lp.shape == (2,)
    with pytest.raises(ValueError, match="last axis of size 6"):
        ThetaSim.from_array(jnp.ones(5))
