"""DeepSets pressure model (seed 003): exact rotation equivariance, permutation invariance, loss falls on tiny data."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.fields import (
    HaloSample,
    PressureDeepSets,
    cluster_frame,
    fit_pressure_model,
    loss_ratio_median,
    reconstruction_loss,
)

N_P, N_T, K, N_SHELL = 48, 12, 6, 4


def _halo(key, dtype=jnp.float64) -> HaloSample:
    """A lumpy, anisotropic, rotating particle set with targets; P from a GNFW-like law times an anisotropy."""
    ks = jax.random.split(key, 8)
    q = jax.random.normal(ks[0], (N_P, 3), dtype) * jnp.asarray([[0.9, 0.5, 0.3]], dtype)
    v = jax.random.normal(ks[1], (N_P, 3), dtype) * 0.3 + 0.8 * jnp.cross(jnp.asarray([[0.0, 0.0, 1.0]], dtype), q)
    r = jax.random.uniform(ks[2], (N_T, 3), dtype, -1.2, 1.2)
    local_q = jax.random.normal(ks[3], (N_T, K, 3), dtype) * 0.1
    local_v = jax.random.normal(ks[4], (N_T, K, 3), dtype) * 0.2
    x = jnp.sqrt(jnp.sum(r * r, -1))
    P = 2.0 * (x / 0.5) ** -0.3 / (1 + x / 0.5) ** 4 * (1 + 0.5 * jnp.tanh(3 * r[:, 0] * q[0, 0]))
    return HaloSample(q=q, v=v, r=r, local_q=local_q, local_v=local_v,
                      local_mask=jax.random.uniform(ks[5], (N_T, K)) < 0.8,
                      n_local=jax.random.uniform(ks[6], (N_T,), dtype, 0, 20),
                      log10_M=jnp.asarray(13.8, dtype), z=jnp.asarray(0.2, dtype),
                      shell_residual=jax.random.normal(ks[7], (N_SHELL,), dtype) * 0.1,
                      P=P, mask=x < 2.0)


def _rotation(key):
    Q, R = jnp.linalg.qr(jax.random.normal(key, (3, 3), jnp.float64))
    Q = Q * jnp.sign(jnp.diag(R))[None, :]
    return Q * jnp.linalg.det(Q)  # proper rotation (det +1)


@eqx.filter_jit
def _model(key, perturb=True, **kw):
    """A small model, built in one compiled call; with `perturb`, random non-zero last layers
    (the constructors zero them so training starts at the GNFW prediction)."""
    k1, k2 = jax.random.split(key)
    model = PressureDeepSets(N_SHELL, width=16, depth=1, key=k1, **kw)
    if not perturb:
        return model
    leaves, treedef = jax.tree.flatten(eqx.filter(model, eqx.is_inexact_array))
    keys = jax.random.split(k2, len(leaves))
    new = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) if x.ndim else x for x, k in zip(leaves, keys)]
    return eqx.combine(jax.tree.unflatten(treedef, new), model)


_forward = eqx.filter_jit(lambda m, h: m(h))


@eqx.filter_jit
def _frame_and_shift(model, halo):
    s, e = cluster_frame(halo)
    return s, e, model.origin(halo, s, e)


@pytest.fixture(scope="module")
def model():
    return _model(jax.random.key(1))


def test_rotation_equivariance(model, getkey):
    halo = jax.jit(_halo)(getkey())
    Rm = _rotation(getkey())
    rot = lambda x: x @ Rm.T
    halo_r = eqx.tree_at(lambda h: (h.q, h.v, h.r, h.local_q, h.local_v), halo,
                         (rot(halo.q), rot(halo.v), rot(halo.r), rot(halo.local_q), rot(halo.local_v)))
    P, _ = _forward(model, halo)
    P_r, _ = _forward(model, halo_r)
    assert float(jnp.std(P)) > 0.05  # a non-trivial field, not a constant
    np.testing.assert_allclose(np.asarray(P_r), np.asarray(P), rtol=1e-9, atol=1e-12)  # float64 round-off
    # The Origin module's shift is a vector: it rotates with the input.
    s, e, shift = _frame_and_shift(model, halo)
    s_r, e_r, shift_r = _frame_and_shift(model, halo_r)
    np.testing.assert_allclose(np.asarray(s_r), np.asarray(s), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(e_r), np.asarray(rot(e)), atol=1e-9)
    assert float(jnp.linalg.norm(shift)) > 1e-3
    np.testing.assert_allclose(np.asarray(shift_r), np.asarray(rot(shift)), atol=1e-10)
    # A reflection of the inputs is not a symmetry the model is built for (J is a pseudovector): it changes
    # the output, so the test above can fail.
    halo_m = eqx.tree_at(lambda h: (h.q, h.v, h.r), halo, (-halo.q, -halo.v, -halo.r))
    assert not np.allclose(np.asarray(_forward(model, halo_m)[0]), np.asarray(P), rtol=1e-6)


def test_permutation_invariance(model, getkey):
    halo = jax.jit(_halo)(getkey())
    pp = jax.random.permutation(getkey(), N_P)
    pk = jax.random.permutation(getkey(), K)
    halo_p = eqx.tree_at(lambda h: (h.q, h.v, h.local_q, h.local_v, h.local_mask), halo,
                         (halo.q[pp], halo.v[pp], halo.local_q[:, pk], halo.local_v[:, pk], halo.local_mask[:, pk]))
    P, _ = _forward(model, halo)
    P_p, _ = _forward(model, halo_p)
    np.testing.assert_allclose(np.asarray(P_p), np.asarray(P), rtol=1e-10, atol=1e-12)


def test_loss_falls_and_beats_gnfw_on_tiny_set(getkey):
    halos = jax.jit(jax.vmap(_halo))(jax.random.split(getkey(), 4))
    bench = _model(getkey(), perturb=False, origin=False, local=False, stochastic=False)
    net = _model(getkey(), perturb=False)
    ratio = eqx.filter_jit(loss_ratio_median)
    L0, _ = ratio(net, bench, halos)  # starts at the GNFW prediction (aggregator output zero)
    assert float(L0) == pytest.approx(1.0, rel=1e-12)
    net, losses = fit_pressure_model(net, halos, key=getkey(), steps=60, batch_size=4, learning_rate=1e-2)
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    L_opt, ratios = ratio(net, bench, halos)
    assert float(L_opt) < 0.7 and ratios.shape == (4,)
    assert float(reconstruction_loss(jnp.asarray(halos.P[0]), jax.tree.map(lambda x: x[0], halos))) == 0.0
    with pytest.raises(ValueError, match="latent"):
        net(jax.tree.map(lambda x: x[0], halos), latent="mode")


def test_eq6_gaps_and_noise(getkey):
    """Seed 003 eq. (6): Δ± are the sorted neighbours' gaps; δ = N r Δ_sgn(r) has the half-normal means N Δ± √(2/π)."""
    from jaxcluster.fields import neighbour_gaps, scalar_noise, scalar_statistics

    halos = jax.jit(jax.vmap(_halo))(jax.random.split(getkey(), 6))
    s = np.asarray(jax.vmap(lambda h: cluster_frame(h)[0])(halos))
    lo, hi = (np.asarray(g) for g in neighbour_gaps(halos))
    for a in range(s.shape[1]):
        v = s[:, a]
        for i in range(v.size):
            below, above = v[v < v[i]], v[v > v[i]]
            d_lo = v[i] - below.max() if below.size else None
            d_hi = above.min() - v[i] if above.size else None
            # (z is the same for every halo here: all ties, no noise)
            assert lo[i, a] == pytest.approx(d_lo if d_lo is not None else (d_hi or 0.0), abs=1e-12)
            assert hi[i, a] == pytest.approx(d_hi if d_hi is not None else (d_lo or 0.0), abs=1e-12)
    # half-normal conditional means, mass scalar (index 0) with its own N
    n = 40000
    d_lo, d_hi = jnp.full((n, 8), 0.5), jnp.full((n, 8), 2.0)
    delta = np.asarray(scalar_noise(getkey(), d_lo, d_hi, 10.0, 3.0))
    half = np.sqrt(2 / np.pi)
    for a, N in ((0, 3.0), (4, 10.0)):
        pos, neg = delta[delta[:, a] > 0, a], delta[delta[:, a] < 0, a]
        assert pos.mean() == pytest.approx(N * 2.0 * half, rel=0.03)
        assert neg.mean() == pytest.approx(-N * 0.5 * half, rel=0.03)
    # the normalisation maps the set's scalars to zero mean, unit variance
    mean, std = scalar_statistics(halos)
    z = (s - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.std(0)[np.asarray(std) > 1e-6], 1.0, rtol=1e-10)


def test_normalised_noisy_model_stays_equivariant(getkey):
    halos = jax.jit(jax.vmap(_halo))(jax.random.split(getkey(), 4))
    net = _model(getkey(), perturb=False).with_scalar_normalisation(halos)
    h0 = jax.tree.map(lambda x: x[0], halos)
    R = _rotation(getkey())
    rot = eqx.tree_at(lambda h: (h.q, h.v, h.r, h.local_q, h.local_v), h0,
                      (h0.q @ R.T, h0.v @ R.T, h0.r @ R.T, h0.local_q @ R.T, h0.local_v @ R.T))
    noise = jnp.linspace(-0.1, 0.1, 8)
    f = eqx.filter_jit(lambda m, h: m(h, scalar_noise=noise)[0])
    np.testing.assert_allclose(np.asarray(f(net, rot)), np.asarray(f(net, h0)), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_training_with_eq6_noise(getkey):
    halos = jax.jit(jax.vmap(_halo))(jax.random.split(getkey(), 4))
    net = _model(getkey(), perturb=False).with_scalar_normalisation(halos)
    net, losses = fit_pressure_model(net, halos, key=getkey(), steps=40, batch_size=4, learning_rate=1e-2,
                                     n_noise=1.0, n_noise_mass=0.5)
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < losses[:5].mean()
    np.testing.assert_array_equal(np.asarray(net.s_std), np.asarray(scalar_statistics_(halos)[1]))


def scalar_statistics_(halos):
    from jaxcluster.fields import scalar_statistics

    return scalar_statistics(halos)
