"""Extended LDL: δΘ = 0 at init, redshift interpolation of δΘ, jit/vmap/grad over θ_sim and z."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from jaxcluster.baryons.eldl import (
    CAMELS_REDSHIFTS,
    ExtendedLDL,
    Hypernetwork,
    _interpolation_weights,
    ldl_params,
    n_ldl_params,
    shift_ldl_params,
)
from jaxcluster.baryons.ldl import LDL
from jaxcluster.params import ThetaSim

N = 16
BOX = N * 0.39
SHAPE = (N, N, N)


def _particles(key, n_side=N):
    q = (jnp.arange(n_side, dtype=jnp.float64) + 0.5) * (BOX / n_side)
    grid = jnp.stack(jnp.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    return grid + 0.3 * (BOX / n_side) * jax.random.normal(key, grid.shape, dtype=jnp.float64)


def _perturb_net(net: Hypernetwork, key, scale=0.01) -> Hypernetwork:
    last = net.mlp.layers[-1]
    kw, kb = jax.random.split(key)
    return eqx.tree_at(
        lambda n: (n.mlp.layers[-1].weight, n.mlp.layers[-1].bias),
        net,
        (scale * jax.random.normal(kw, last.weight.shape, dtype=last.weight.dtype),
         scale * jax.random.normal(kb, last.bias.shape, dtype=last.bias.dtype)),
    )


def _perturbed(model: ExtendedLDL, key) -> ExtendedLDL:
    keys = jax.random.split(key, 1 + len(model.T_nets))
    return eqx.tree_at(
        lambda m: (m.n_e_net, m.T_nets),
        model,
        (_perturb_net(model.n_e_net, keys[0]), tuple(_perturb_net(n, k) for n, k in zip(model.T_nets, keys[1:]))),
    )


_call = eqx.filter_jit(lambda m, pos, theta, z: m(pos, theta, z, BOX, SHAPE))
_ldl = eqx.filter_jit(lambda ldl, pos: ldl(pos, BOX, SHAPE))


@pytest.fixture(scope="module")
def setup():
    key = jax.random.key(11)
    model = eqx.filter_jit(ExtendedLDL.init)(jax.random.fold_in(key, 0))
    pos = _particles(jax.random.fold_in(key, 1))
    return model, _perturbed(model, jax.random.fold_in(key, 2)), pos


def test_structure_and_defaults(setup):
    model, _, _ = setup
    assert model.T_redshifts == CAMELS_REDSHIFTS == (0.1, 0.15, 0.21, 0.27, 0.33, 0.40, 0.47, 0.54)
    assert len(model.T_nets) == 8
    n = n_ldl_params(model.n_e_base)
    assert n == 2 * (2 + 12) + 3  # (γ, α, Ξ) per displacement layer + (b0, b̃1, μ)
    assert model.n_e_net.n_out == n and ldl_params(model.T_base).shape == (n,)
    assert n_ldl_params(ExtendedLDL.init(jax.random.key(0), filter="parametric").T_base) == 2 * 5 + 3


def test_init_equals_base_ldl_for_any_theta(setup, getkey):
    model, _, pos = setup
    base_ne = _ldl(model.n_e_base, pos)
    base_T = _ldl(model.T_base, pos)
    thetas = ThetaSim.sample_prior(getkey(), (2,))
    for i in range(2):
        theta = jax.tree_util.tree_map(lambda x: x[i], thetas)
        np.testing.assert_array_equal(np.asarray(model.delta_n_e(theta)), 0.0)
        ne, T = _call(model, pos, theta, jnp.asarray(0.3))
        # Θ_fid + 0 is Θ_fid exactly; jit vs eager fusion leaves a few ulp.
        np.testing.assert_allclose(np.asarray(ne), np.asarray(base_ne), rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(np.asarray(T), np.asarray(base_T), rtol=1e-14, atol=1e-14)


def test_redshift_interpolation_of_delta_theta(setup):
    _, model, _ = setup
    theta = ThetaSim(Omega_m=0.25, sigma_8=0.9, A_SN1=2.0, A_SN2=0.7, A_AGN1=0.5, A_AGN2=1.3)
    u = theta.to_unit()
    outs = [net(u) for net in model.T_nets]
    zs = model.T_redshifts
    assert float(jnp.max(jnp.abs(outs[3] - outs[4]))) > 1e-3  # the nets do differ
    delta_T = eqx.filter_jit(lambda t, z: model.delta_T(t, z))
    # Weights (1, 0) at a training redshift: exactly that net (to jit-vs-eager ulp of the MLP).
    exact = dict(rtol=1e-13, atol=1e-16)
    for k, z in enumerate(zs):
        np.testing.assert_allclose(np.asarray(delta_T(theta, jnp.asarray(z))), np.asarray(outs[k]), **exact)
    i, t = _interpolation_weights(jnp.asarray(zs[4]), zs)
    assert (int(i), float(t)) == (4, 0.0)
    i, t = _interpolation_weights(jnp.asarray(zs[-1]), zs)
    assert (int(i), float(t)) == (len(zs) - 2, 1.0)
    mid = 0.5 * (zs[3] + zs[4])
    np.testing.assert_allclose(np.asarray(delta_T(theta, jnp.asarray(mid))), np.asarray(0.5 * (outs[3] + outs[4])), atol=1e-15)
    quarter = zs[1] + 0.25 * (zs[2] - zs[1])
    np.testing.assert_allclose(np.asarray(delta_T(theta, jnp.asarray(quarter))), np.asarray(0.75 * outs[1] + 0.25 * outs[2]), atol=1e-15)
    # Clamped outside the trained range.
    np.testing.assert_allclose(np.asarray(delta_T(theta, jnp.asarray(0.0))), np.asarray(outs[0]), **exact)
    np.testing.assert_allclose(np.asarray(delta_T(theta, jnp.asarray(2.0))), np.asarray(outs[-1]), **exact)
    # n_e ignores z.
    np.testing.assert_array_equal(np.asarray(model.delta_n_e(theta)), np.asarray(model.n_e_net(u)))


def test_T_field_at_training_redshift_uses_that_net(setup):
    _, model, pos = setup
    theta = ThetaSim(A_AGN1=3.0)
    k = 5
    _, T = _call(model, pos, theta, jnp.asarray(model.T_redshifts[k]))
    expected = _ldl(shift_ldl_params(model.T_base, model.T_nets[k](theta.to_unit())), pos)
    np.testing.assert_allclose(np.asarray(T), np.asarray(expected), rtol=1e-12, atol=1e-12)
    assert float(jnp.min(T)) >= 0.0
    # The perturbation does change the field.
    assert float(jnp.max(jnp.abs(T - _ldl(model.T_base, pos)))) > 1e-4


def test_vmap_over_theta_equals_separate_calls(setup, getkey):
    _, model, pos = setup
    thetas = ThetaSim.sample_prior(getkey(), (3,))
    z = jnp.asarray(0.24)
    batched = eqx.filter_jit(eqx.filter_vmap(lambda m, t: m(pos, t, z, BOX, SHAPE), in_axes=(None, 0)))(model, thetas)
    assert batched[0].shape == (3, *SHAPE) and batched[1].shape == (3, *SHAPE)
    for i in range(3):
        ne, T = _call(model, pos, jax.tree_util.tree_map(lambda x: x[i], thetas), z)
        np.testing.assert_allclose(np.asarray(batched[0][i]), np.asarray(ne), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(batched[1][i]), np.asarray(T), rtol=1e-12, atol=1e-12)
    assert not np.allclose(np.asarray(batched[1][0]), np.asarray(batched[1][1]))


def test_grad_wrt_theta_and_z_matches_finite_differences(setup, getkey):
    _, model, pos = setup
    w1 = jax.random.normal(getkey(), SHAPE, dtype=jnp.float64)
    w2 = jax.random.normal(getkey(), SHAPE, dtype=jnp.float64)

    @jax.jit
    def loss(theta, z):
        ne, T = model(pos, theta, z, BOX, SHAPE)
        return jnp.sum(w1 * ne) + jnp.sum(w2 * T)

    theta = ThetaSim(Omega_m=0.35, sigma_8=0.75, A_SN1=1.5, A_SN2=0.8, A_AGN1=0.6, A_AGN2=1.2)
    z = jnp.asarray(0.3)  # inside (0.27, 0.33): T's δΘ is linear in z here
    g_theta, g_z = jax.grad(loss, argnums=(0, 1))(theta, z)
    for name in ThetaSim.names:
        assert np.isfinite(float(getattr(g_theta, name)))
    h = 1e-6
    for name in ("Omega_m", "A_SN1"):
        v = getattr(theta, name)
        plus = eqx.tree_at(lambda t: getattr(t, name), theta, v + h)
        minus = eqx.tree_at(lambda t: getattr(t, name), theta, v - h)
        fd = (loss(plus, z) - loss(minus, z)) / (2 * h)
        g = float(getattr(g_theta, name))
        assert abs(g) > 1e-6
        # Central differences, float64, h = 1e-6: truncation ~h², round-off ~1e-16 |L| / h.
        assert g == pytest.approx(float(fd), rel=1e-5)
    fd_z = (loss(theta, z + h) - loss(theta, z - h)) / (2 * h)
    assert float(g_z) == pytest.approx(float(fd_z), rel=1e-5)
    assert abs(float(g_z)) > 1e-6


def test_validation(setup):
    model, _, _ = setup
    with pytest.raises(ValueError, match="one T net per redshift"):
        ExtendedLDL(model.n_e_base, model.T_base, model.n_e_net, model.T_nets[:3], CAMELS_REDSHIFTS)
    with pytest.raises(ValueError, match="increasing"):
        ExtendedLDL(model.n_e_base, model.T_base, model.n_e_net, model.T_nets[:2], (0.3, 0.2))
    with pytest.raises(ValueError, match="parameters"):
        ExtendedLDL(LDL.init(n_displacements=1), model.T_base, model.n_e_net, model.T_nets, CAMELS_REDSHIFTS)
    with pytest.raises(ValueError, match="δΘ"):
        shift_ldl_params(model.T_base, jnp.zeros(5))
    single = ExtendedLDL.init(jax.random.key(1), redshifts=(0.21,))
    theta = ThetaSim()
    np.testing.assert_array_equal(np.asarray(single.delta_T(theta, jnp.asarray(0.5))), np.asarray(single.T_nets[0](theta.to_unit())))


def test_theta_outside_prior_and_wrong_shapes_raise_clear_errors(setup):
    model, perturbed, pos = setup
    with pytest.raises(ValueError, match=r"Omega_m .* allowed range \[0.1, 0.5\]"):
        ThetaSim(Omega_m=0.7)  # concrete values: at construction
    # traced values: inside jit, naming the parameter and its range
    bad = jnp.asarray([0.3, 0.8, 5.0, 1.0, 1.0, 1.0])
    with pytest.raises(Exception, match=r"A_SN1 is outside its allowed range \[0.25, 4.0\]"):
        eqx.filter_jit(lambda m, x: m.delta_n_e(ThetaSim.from_array(x)))(perturbed, bad)
    with pytest.raises(Exception, match=r"A_SN1 is outside its allowed range"):
        eqx.filter_jit(lambda m, x: m.delta_T(ThetaSim.from_array(x), 0.3))(perturbed, bad)
    batch = ThetaSim.from_array(jnp.tile(jnp.asarray(ThetaSim().to_array()), (3, 1)))
    with pytest.raises(ValueError, match="one θ_sim .* vmap"):
        model.delta_n_e(batch)
    # with the jaxtyping import hook on (as in this suite) the annotations catch these first
    with pytest.raises((ValueError, TypeCheckError), match="z"):
        model.delta_T(ThetaSim(), jnp.asarray([0.1, 0.2]))
    with pytest.raises((TypeError, TypeCheckError), match="ThetaSim"):
        model.delta_n_e(jnp.zeros(6))
    with pytest.raises((ValueError, TypeCheckError), match="pos"):
        model.n_e(pos[:, :2], ThetaSim(), BOX, SHAPE)


def test_conditioned_model_is_the_base_model_at_the_fiducial_point(setup):
    _, perturbed, pos = setup
    fid = ThetaSim()
    np.testing.assert_array_equal(np.asarray(perturbed.delta_n_e(fid)), 0.0)
    np.testing.assert_array_equal(np.asarray(perturbed.delta_T(fid, 0.33)), 0.0)
    np.testing.assert_allclose(np.asarray(_call(perturbed, pos, fid, 0.3)[0]), np.asarray(_ldl(perturbed.n_e_base, pos)))
    away = ThetaSim(Omega_m=0.35, A_AGN1=2.0)
    assert float(jnp.max(jnp.abs(perturbed.delta_n_e(away)))) > 1e-4


def test_hypernetwork_output_scales_follow_the_parameter_kinds(setup):
    from jaxcluster.baryons.eldl import PARAM_SCALES, ldl_param_scales

    model, _, _ = setup
    scales = np.asarray(ldl_param_scales(model.T_base))
    assert scales.size == n_ldl_params(model.T_base)
    # tag each leaf with its index, flatten like δΘ, and check the scale lands on the right parameter
    layer = model.T_base.displacements[0]
    tagged = eqx.tree_at(lambda l: (l.displacements[0].gamma, l.displacements[0].alpha, l.activation.mu), model.T_base,
                         (jnp.asarray(-1.0), jnp.asarray(-2.0), jnp.asarray(-3.0)))
    flat = np.asarray(ldl_params(tagged))
    for value, name in ((-1.0, "gamma"), (-2.0, "alpha"), (-3.0, "mu")):
        assert scales[np.flatnonzero(flat == value)[0]] == PARAM_SCALES[name]
    assert float(layer.alpha) != -2.0
    # δΘ = s ⊙ [MLP(u) − MLP(u_fid)]: each output of the MLP moves its parameter by its scale
    _, perturbed, _ = setup
    net = perturbed.T_nets[0]
    u, u_fid = ThetaSim(A_SN1=2.0).to_unit(), ThetaSim().to_unit()
    raw = net.mlp(2 * u - 1) - net.mlp(2 * u_fid - 1)
    np.testing.assert_allclose(np.asarray(net(u)), scales * np.asarray(raw), rtol=1e-6, atol=1e-15)
    with pytest.raises(ValueError, match="positive floats"):
        Hypernetwork(3, key=jax.random.key(0), scale=(1.0, 0.0, 1.0))


def test_layer_structure_is_saved_with_the_weights(tmp_path, getkey):
    # The displacement layers' gradient and source sub-sampling are static: the weights' JSON
    # carries them (`ExtendedLDL.init` arguments), and loading rebuilds the same painter.
    from jaxcluster.baryons.weights import load_eldl, save_eldl

    structure = {"redshifts": [0.1, 0.3], "gradient": "fd4", "source_stride": 3}
    model = ExtendedLDL.init(getkey(), redshifts=(0.1, 0.3), gradient="fd4", source_stride=3)
    model = eqx.tree_at(lambda m: [d.alpha for d in m.n_e_base.displacements + m.T_base.displacements], model,
                        [jnp.asarray(a) for a in (0.02, 0.01, 0.03, 0.015)])
    save_eldl(tmp_path / "w.eqx", model, structure, {"note": "test"})
    loaded, info = load_eldl(tmp_path / "w.eqx")
    for ldl in (loaded.n_e_base, loaded.T_base):
        assert {(d.gradient, d.source_stride) for d in ldl.displacements} == {("fd4", 3)}
    pos = _particles(getkey()).astype(jnp.float32)
    theta = ThetaSim(Omega_m=0.35, A_AGN1=2.0)
    for a, b in zip(_call(model, pos, theta, 0.2), _call(loaded, pos, theta, 0.2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(a))))
    assert info["structure"]["source_stride"] == 3
