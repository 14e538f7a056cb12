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
    model = eqx.combine(jax.tree.unflatten(treedef, new), model)
    # with layer norm the Aggregator's hidden features are O(1): a smaller last layer keeps P̂ mostly > 0
    last = model.aggregator.layers[-1]
    return eqx.tree_at(lambda m: (m.aggregator.layers[-1].weight, m.aggregator.layers[-1].bias), model,
                       (0.1 * last.weight, 0.1 * last.bias))


# evaluation: inference mode (the Aggregator's dropout off)
_forward = eqx.filter_jit(lambda m, h: eqx.nn.inference_mode(m)(h))


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
    f = eqx.filter_jit(lambda m, h: eqx.nn.inference_mode(m)(h, scalar_noise=noise)[0])
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


def _rotated(h, R):
    return eqx.tree_at(lambda h: (h.q, h.v, h.r, h.local_q, h.local_v), h,
                       (h.q @ R.T, h.v @ R.T, h.r @ R.T, h.local_q @ R.T, h.local_v @ R.T))


def test_dropout_training_and_inference_modes(model, getkey):
    """Seed 003 §2: Aggregator dropout (30 %, 5 %) draws masks in training mode only; inference is deterministic,
    equals the network without dropout, and exactly equivariant; training mode is equivariant for a fixed key."""
    from jaxcluster.fields import FeatureMLP

    agg = model.aggregator
    assert [d.p for d in agg.dropouts] == [0.3] and all(n is not None for n in agg.norms)  # depth 1: first rate
    assert model.local.phi.dropouts == (None,)  # dropout only in the Aggregator
    halo = jax.jit(_halo)(getkey())
    with pytest.raises(ValueError, match="key"):
        model(halo)  # training mode needs a key for the masks
    no_drop = eqx.tree_at(lambda m: m.aggregator.dropouts, model, (None,))
    R = _rotation(getkey())
    k1 = getkey()

    @eqx.filter_jit  # one compilation for every mode
    def modes(model, no_drop, h, h_r, k):
        inf = eqx.nn.inference_mode(model)
        train = lambda m, x: m(x, key=k, latent="prior")[0]
        return (train(model, h), train(no_drop, h), train(model, h_r), train(inf, h), inf(h)[0], inf(h_r)[0],
                no_drop(h)[0])

    P_tr, P_nd_tr, P_tr_r, P_inf_k, P_inf, P_inf_r, P_nd = (np.asarray(x) for x in
                                                            modes(model, no_drop, halo, _rotated(halo, R), k1))
    # same key, same latent draw: the only difference is the dropout mask
    assert not np.allclose(P_tr, P_nd_tr)
    np.testing.assert_allclose(P_tr_r, P_tr, rtol=1e-9, atol=1e-12)  # training mode: equivariant for a fixed key
    assert not eqx.nn.inference_mode(model).aggregator.needs_key() and model.aggregator.needs_key()
    np.testing.assert_array_equal(P_inf_k, P_nd_tr)  # inference mode: no masks, the key draws only the latent
    np.testing.assert_array_equal(P_inf, P_nd)
    np.testing.assert_allclose(P_inf_r, P_inf, rtol=1e-9, atol=1e-12)
    # inverted dropout: the mean over masks of a layer's output is its input
    mlp = FeatureMLP(3, 1, 4000, 1, layer_norm=False, dropout=(0.3,), key=getkey())
    x = jnp.ones(3, jnp.float64)
    hidden = jax.nn.leaky_relu(mlp.layers[0](x))
    masked = jax.vmap(lambda k: mlp.dropouts[0](hidden, key=k))(jax.random.split(getkey(), 8))
    kept = np.asarray(masked != 0).mean()
    assert kept == pytest.approx(0.7, abs=0.01)
    with pytest.raises(ValueError, match="dropout"):
        FeatureMLP(3, 1, 4, 1, dropout=(1.0,), key=getkey())


def test_vector_rotation_noise(model, getkey):
    """Seed 003 §3: e_α rotated by angles ~ N(0, 2°); the noise keeps the loss exactly invariant under a rotation
    of the whole halo (axes in the inertia frame), and it changes the loss."""
    from jaxcluster.fields import rotate_frame_vectors, training_loss, vector_rotation_noise

    w = np.asarray(vector_rotation_noise(getkey(), (4000,), 2.0, jnp.float64))
    assert w.shape == (4000, 5, 3)
    angle = np.linalg.norm(w, axis=-1)
    assert np.sqrt(np.mean(angle**2)) == pytest.approx(np.radians(2.0), rel=0.03)  # |θ| with θ ~ N(0, σ²)
    axes = (w / angle[..., None]).reshape(-1, 3)
    np.testing.assert_allclose(axes.mean(0), 0.0, atol=0.02)  # isotropic
    halo = jax.jit(_halo)(getkey())
    _, e = cluster_frame(halo)
    rot = jnp.asarray(w[0])
    e_n = rotate_frame_vectors(e, rot)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(e_n), axis=-1), 1.0, atol=1e-12)
    cos = np.clip(np.sum(np.asarray(e_n) * np.asarray(e), -1), -1, 1)
    # the angle between e and its image: θ sin(axis, e)-weighted, never more than θ
    assert np.all(np.arccos(cos) <= angle[0] + 1e-9)
    # an axis ⟂ e (in the inertia frame: e_2 about e_3) turns e by exactly θ
    w_perp = jnp.zeros((5, 3), jnp.float64).at[2, 2].set(0.1)
    np.testing.assert_allclose(float(jnp.dot(rotate_frame_vectors(e, w_perp)[2], e[2])), np.cos(0.1), rtol=1e-12)
    # equivariance of the noisy training loss (same key, same noise; dropout on)
    halos = jax.tree.map(lambda x: x[None], halo)
    R = _rotation(getkey())
    halos_r = jax.tree.map(lambda x: x[None], _rotated(halo, R))
    noise = jnp.asarray(w[:1]) * 20.0  # ~40°: a strong perturbation
    loss = eqx.filter_jit(lambda m, h, k, n: training_loss(m, h, k, vector_rotation=n))
    k = getkey()
    L, L_r, L0 = loss(model, halos, k, noise), loss(model, halos_r, k, noise), loss(model, halos, k, None)
    assert float(L_r) == pytest.approx(float(L), rel=1e-9)
    assert abs(float(L) - float(L0)) > 1e-6 * float(L0)


def test_module_labels_rates_and_weight_decay(getkey):
    """Seed 003 §3: per-module learning rates (optax.multi_transform over module labels) and weight decay
    on the Aggregator and Origin weight matrices only."""
    import optax

    from jaxcluster.fields import module_labels, pressure_optimizer

    net = _model(getkey(), perturb=False)
    params = eqx.filter(net, eqx.is_inexact_array)
    labels = module_labels(params)
    for name in ("gnfw", "origin", "local", "stochastic", "aggregator"):
        assert set(jax.tree.leaves(getattr(labels, name))) == {name}
    assert labels.log_k == "k" and labels.s_mean == labels.s_std == "frozen"
    assert len(jax.tree.leaves(labels)) == len(jax.tree.leaves(params))
    # one optimiser step on unit gradients: module factors and decay act on the labelled leaves only
    grads = jax.tree.map(jnp.ones_like, params)
    factors = {"gnfw": 0.0, "local": 0.0, "stochastic": 0.5, "k": 0.0}
    lr, wd = 1e-2, 0.5
    with jax.numpy_dtype_promotion("standard"):  # optax's int32 step counters
        lr0 = float(optax.cosine_onecycle_schedule(1, lr)(0))
        ups = {}
        for w in (0.0, wd):
            opt = pressure_optimizer(1, lr, factors, weight_decay=w, clip=1e9)
            ups[w] = eqx.filter_jit(lambda g, p: opt.update(g, opt.init(p), p)[0])(grads, params)
    u0, u1 = ups[0.0], ups[wd]
    for name in ("gnfw", "local", "log_k", "s_mean", "s_std"):
        assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(getattr(u0, name)))
    # Adam's first step is -lr sign(g): -lr0 × the module's factor
    for name, f in (("origin", 1.0), ("aggregator", 1.0), ("stochastic", 0.5)):
        for x in jax.tree.leaves(getattr(u0, name)):
            np.testing.assert_allclose(np.asarray(x), -f * lr0, rtol=1e-6)
    # decoupled decay: -lr0 wd W on the Aggregator's and Origin's weight matrices, nothing elsewhere
    for get in (lambda m: m.aggregator.layers[0].weight, lambda m: m.origin.phi.layers[0].weight):
        np.testing.assert_allclose(np.asarray(get(u1) - get(u0)), -lr0 * wd * np.asarray(get(params)), rtol=1e-9,
                                   atol=1e-15)
    for get in (lambda m: m.aggregator.layers[0].bias, lambda m: m.aggregator.norms[0].weight,
                lambda m: m.local.phi.layers[0].weight, lambda m: m.stochastic.mlp.layers[0].weight):
        np.testing.assert_array_equal(np.asarray(get(u1)), np.asarray(get(u0)))
    with pytest.raises(ValueError, match="module_learning_rates"):
        pressure_optimizer(10, lr, {"decoder": 1.0})
    with pytest.raises(ValueError, match="weight_decay"):
        pressure_optimizer(10, lr, weight_decay=-1.0)


def test_shell_means():
    """Seed 003 §2: 32 linear shells to 2 R200 by default; empty shells interpolated, not zero."""
    from jaxcluster.fields import shell_means

    x = (np.arange(2000) + 0.5) / 1000  # uniform on [0, 2): shell means of a linear law are its centre values
    np.testing.assert_allclose(shell_means(x, 3.0 * x, 8), 3.0 * (np.arange(8) + 0.5) / 4, rtol=1e-12)
    sparse = np.asarray([0.3, 1.0, 1.7])  # 32 shells, 3 filled: the rest interpolate the linear law
    m = shell_means(sparse, 2.0 * sparse, 32)
    centre = (np.arange(32) + 0.5) / 16
    filled = np.isin(np.arange(32), (sparse * 16).astype(int))
    np.testing.assert_allclose(m[filled], 2.0 * sparse)
    # empty shells: linear in the shell centres between the filled shells' means, constant beyond the ends
    c_f = centre[filled]
    inner = (centre > c_f[0]) & (centre < c_f[-1])
    np.testing.assert_allclose(m[inner], np.interp(centre[inner], c_f, 2.0 * sparse), rtol=1e-12)
    assert np.all(m[centre < c_f[0]] == 0.6) and np.allclose(m[centre > c_f[-1]], 3.4)
    assert not np.any(m == 0.0)
    assert PressureDeepSets(key=jax.random.key(0)).stochastic.mlp.layers[0].in_features == 32 + 8
    with pytest.raises(ValueError, match="n_shell"):
        shell_means(sparse, sparse, 0)
