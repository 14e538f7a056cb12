"""Tests of the reverse-time adjoint of the FastPM KDK (`jaxcluster.nbody.adjoint`).

Checked: the custom VJP against plain autodiff of the same scan; the
reversible forward against the diffrax `FastPMKDK` path; gradients with
respect to the initial (x, p) and to the cosmology (Ω_m through the growth
factors, σ_8 through the initial conditions) against the checkpoint adjoint
and central finite differences; cotangents entering at an intermediate
snapshot; the round-off of the time-reversed reconstruction.

Compilation dominates the run time, so the N-body problem is compiled once
per module (a fixture returning jitted primal+VJP functions whose output
cotangent is an input) and every loss reuses it.
"""

import contextlib
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import PMConfig, lpt, nbody, pm_force, step_grid, white_noise
from jaxcluster.nbody.adjoint import _kdk_raw, kdk_factors, kdk_reverse, kdk_reversible

A_INIT = 0.1


@contextlib.contextmanager
def _engine_promotion():
    """Standard dtype/rank promotion around the PM engine.

    `mesh._stencil` (rank promotion in `jnp.mod`) and `force_from_density`
    (python complex × float) do not yet pass the strict settings of
    conftest; the adjoint's own arithmetic is tested under strict settings
    with an analytic force below.
    """
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


def _toy_force(x):
    """A smooth, nonlinear, particle-coupling force for VJP checks without a mesh."""
    return -jnp.sin(x) + 0.1 * jnp.roll(x, 1, axis=0) ** 2


# ------------------------------------------------------------ the custom VJP itself


def test_custom_vjp_matches_plain_autodiff_toy_force():
    kx, kp, kf, kw = jax.random.split(jax.random.key(1), 4)
    x0 = jax.random.normal(kx, (20, 3))
    p0 = jax.random.normal(kp, (20, 3))
    factors = 0.2 * jax.random.uniform(kf, (5, 3))
    snap_idx = jnp.array([0, 2, 5, 2], dtype=jnp.int32)  # the initial state, a repeat, the end
    w = jax.random.normal(kw, (4, 20, 3))

    def loss(fn, factors, x, p):
        bx, bp = fn(_toy_force, factors, x, p, snap_idx)
        return jnp.sum(w * bx**2) + jnp.sum(w * bp)

    ours = jax.jit(jax.value_and_grad(partial(loss, kdk_reversible), argnums=(0, 1, 2)))(factors, x0, p0)
    plain = jax.jit(jax.value_and_grad(partial(loss, _kdk_raw), argnums=(0, 1, 2)))(factors, x0, p0)
    assert float(ours[0]) == pytest.approx(float(plain[0]), rel=1e-14)
    ours, plain = ours[1], plain[1]
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("mesh_factor", [1])  # 2: the nbody tests below
def test_custom_vjp_matches_plain_autodiff_pm_force(mesh_factor):
    cfg = PMConfig(32.0, (8, 8, 8), (8 * mesh_factor,) * 3)
    kx, kp, kw = jax.random.split(jax.random.key(2), 3)
    x0 = cfg.lattice() + 0.8 * jax.random.normal(kx, (cfg.n_particles, 3))
    p0 = 0.5 * jax.random.normal(kp, (cfg.n_particles, 3))
    factors = jnp.array([[0.3, 0.8, 0.35], [0.4, 0.9, 0.45], [0.5, 1.0, 0.5]])
    snap_idx = jnp.array([1, 3], dtype=jnp.int32)
    w = jax.random.normal(kw, (2, cfg.n_particles, 3))
    force = partial(pm_force, config=cfg)

    def loss(fn, factors, x, p):
        bx, bp = fn(force, factors, x, p, snap_idx)
        return jnp.sum(w * jnp.sin(bx / 4.0)) + jnp.sum(w * bp)

    with _engine_promotion():
        ours = jax.jit(jax.grad(partial(loss, kdk_reversible), argnums=(0, 1, 2)))(factors, x0, p0)
        plain = jax.jit(jax.grad(partial(loss, _kdk_raw), argnums=(0, 1, 2)))(factors, x0, p0)
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(b))))


def test_reconstruction_is_exact_to_roundoff():
    kx, kp = jax.random.split(jax.random.key(3))
    x0 = jax.random.normal(kx, (30, 3))
    p0 = jax.random.normal(kp, (30, 3))
    factors = jnp.full((10, 3), 0.1)

    @jax.jit
    def there_and_back(x0, p0):
        bx, bp = kdk_reversible(_toy_force, factors, x0, p0, jnp.array([10], dtype=jnp.int32))
        return kdk_reverse(_toy_force, factors, bx[0], bp[0])

    x_rec, p_rec = there_and_back(x0, p0)
    np.testing.assert_allclose(x_rec, x0, atol=1e-13)
    np.testing.assert_allclose(p_rec, p0, atol=1e-13)


def test_bad_shapes_raise():
    x = jnp.zeros((4, 3))
    # beartype (in pytest) or the ValueError (always) rejects them.
    with pytest.raises((ValueError, TypeCheckError)):
        kdk_reversible(_toy_force, jnp.zeros((3, 2)), x, x, jnp.array([1], dtype=jnp.int32))
    with pytest.raises((ValueError, TypeCheckError)):
        kdk_reversible(_toy_force, jnp.zeros((3, 3)), x, jnp.zeros((5, 3)), jnp.array([1], dtype=jnp.int32))


# ------------------------------------------------------------ through nbody


@pytest.fixture(scope="module")
def problem():
    """8³ particles on a 16³ mesh, 4 steps plus a snapshot at a = 0.5 (5 steps), 2 snapshots."""
    cfg = PMConfig(64.0, (8, 8, 8), (16, 16, 16))
    a_steps = jnp.asarray(step_grid(A_INIT, 1.0, 4, snapshots=[0.5]))
    snaps = jnp.asarray([0.5, 1.0])
    noise = 0.3 * white_noise(jax.random.key(0), cfg.particle_shape)
    cosmo = Cosmology()

    with _engine_promotion():
        growth_fn = jax.jit(growth_table)

        def ics(cosmo, growth):
            # σ_8 scales the linear field (a stand-in for linear_field's normalisation).
            return lpt(cosmo.sigma_8 * noise, cosmo, growth, cfg, A_INIT)

        ics_fn = jax.jit(ics)

        def make_vjp(adjoint):
            @eqx.filter_jit
            def primal_vjp(inputs, cot):
                def f(inputs):
                    x0, p0, c, g = inputs
                    r = nbody(x0, p0, c, cfg, a_steps, snaps, growth=g, adjoint=adjoint)
                    return r.pos, r.p
                out, vjp = eqx.filter_vjp(f, inputs)
                return out, vjp(cot)[0]
            return primal_vjp

        growth = growth_fn(cosmo)
        x0, p0 = ics_fn(cosmo, growth)
    return dict(cfg=cfg, cosmo=cosmo, growth=growth, x0=x0, p0=p0, growth_fn=growth_fn, ics_fn=ics_fn,
                vjp={a: make_vjp(a) for a in ("reversible", "checkpoint")})


def _cot_of(loss, out):
    """Cotangent of a scalar loss of the N-body outputs (pos, p), each (n_snap, n_ptcl, 3)."""
    return jax.grad(loss)(out)


def _losses():
    """Scalar losses of (pos, p): one on everything, one on the intermediate snapshot only."""
    w = jax.random.normal(jax.random.key(7), (8**3, 3))
    return {
        "all": lambda out: jnp.sum(jnp.sin(out[0] / 8.0) * w[None]) + 1e-3 * jnp.sum(out[1] ** 2),
        "middle": lambda out: jnp.sum(jnp.cos(out[0][0] / 5.0) * w) + 1e-2 * jnp.sum(out[1][0] * w),
    }


def _run(problem, adjoint, loss, inputs=None):
    if inputs is None:
        inputs = (problem["x0"], problem["p0"], problem["cosmo"], problem["growth"])
    zero = (jnp.zeros((2, 8**3, 3)), jnp.zeros((2, 8**3, 3)))
    with _engine_promotion():
        out, _ = problem["vjp"][adjoint](inputs, zero)
        cot = _cot_of(loss, out)
        out, grads = problem["vjp"][adjoint](inputs, cot)
    return out, grads


def _total_derivative(problem, grads, dcosmo):
    """d loss / d cosmo along `dcosmo`: the N-body gradients contracted with the IC and growth tangents."""
    dx0, dp0, dgrowth = _ic_tangents(problem, dcosmo)
    gx, gp, gc, gg = grads
    total = jnp.sum(gx * dx0) + jnp.sum(gp * dp0) + _tree_dot(gc, dcosmo) + _tree_dot(gg, dgrowth)
    return float(total)


def _ic_tangents(problem, dcosmo, h=1e-6):
    """Tangents of (x0, p0, growth) along `dcosmo`, by central differences.

    The growth ODE (fixed-step Dopri8) and 2LPT are smooth in the cosmology,
    so h = 1e-6 gives ~1e-10 relative accuracy in float64; this avoids
    compiling a derivative of the growth solve (≈ 15 s), which is the growth
    module's to test.
    """
    outs = []
    for s in (1.0, -1.0):
        c = jax.tree.map(lambda v, d: v + s * h * d, problem["cosmo"], dcosmo)
        with _engine_promotion():
            g = problem["growth_fn"](c)
            outs.append((*problem["ics_fn"](c, g), g))
    def diff(a, b):
        if not eqx.is_inexact_array(a):
            return None
        # The dense solution pads unused time slots with inf: no tangent there.
        ok = jnp.isfinite(a) & jnp.isfinite(b)
        return jnp.where(ok, (jnp.where(ok, a, 0.0) - jnp.where(ok, b, 0.0)) / (2 * h), 0.0)

    return jax.tree.map(diff, outs[0], outs[1])


def _tree_dot(a, b):
    """Σ ⟨a, b⟩ over the float leaves both trees have (None, ints and float0 are zeros)."""
    def leaves(t):
        flat, _ = jax.tree_util.tree_flatten_with_path(t, is_leaf=lambda x: x is None)
        return {path: v for path, v in flat if eqx.is_inexact_array(v)}
    la, lb = leaves(a), leaves(b)
    return sum((jnp.sum(la[k] * lb[k]) for k in la.keys() & lb.keys()), jnp.zeros(()))


def _direction(name):
    c = Cosmology()
    zeros = jax.tree.map(jnp.zeros_like, c)
    return eqx.tree_at(lambda t: getattr(t, name), zeros, jnp.asarray(1.0))


def test_forward_matches_diffrax(problem):
    loss = _losses()["all"]
    out_rev, _ = _run(problem, "reversible", loss)
    out_ck, _ = _run(problem, "checkpoint", loss)
    scale = float(jnp.max(jnp.abs(out_ck[0])))
    np.testing.assert_allclose(out_rev[0], out_ck[0], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(out_rev[1], out_ck[1], rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(out_ck[1]))))


@pytest.mark.parametrize("which", ["all", "middle"])
def test_gradients_reversible_vs_checkpoint(problem, which):
    loss = _losses()[which]
    _, g_rev = _run(problem, "reversible", loss)
    _, g_ck = _run(problem, "checkpoint", loss)
    # Initial state, element by element (atol: a few elements are near zero).
    for a, b in zip(g_rev[:2], g_ck[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * float(jnp.max(jnp.abs(b))))
    # Cosmology: per parameter, through growth and ICs. (Individual growth-table
    # leaves are not compared: some gradients there are pure round-off.)
    for name in ("Omega_m", "sigma_8"):
        d = _direction(name)
        assert _total_derivative(problem, g_rev, d) == pytest.approx(_total_derivative(problem, g_ck, d), rel=1e-6)


@pytest.mark.parametrize("which", ["all", "middle"])
def test_gradients_vs_finite_differences(problem, which):
    loss = _losses()[which]
    _, grads = _run(problem, "reversible", loss)
    gx, gp = grads[0], grads[1]
    base = (problem["x0"], problem["p0"], problem["cosmo"], problem["growth"])

    def value(inputs):
        out, _ = _run(problem, "reversible", loss, inputs)
        return float(loss(out))

    # Initial-state directions.
    k1, k2 = jax.random.split(jax.random.key(11))
    for d_x, d_p in [(jax.random.normal(k1, gx.shape), jnp.zeros_like(gp)),
                     (jnp.zeros_like(gx), jax.random.normal(k2, gp.shape))]:
        h = 1e-6  # small: CIC forces have kinks at cell faces
        plus = value((base[0] + h * d_x, base[1] + h * d_p, base[2], base[3]))
        minus = value((base[0] - h * d_x, base[1] - h * d_p, base[2], base[3]))
        fd = (plus - minus) / (2 * h)
        ad = float(jnp.sum(gx * d_x) + jnp.sum(gp * d_p))
        assert ad == pytest.approx(fd, rel=1e-5, abs=1e-8)

    # Cosmology: the whole chain cosmo → (growth, ICs) → N-body.
    for name in ("Omega_m", "sigma_8"):
        h = 1e-6
        vals = []
        for s in (1.0, -1.0):
            c = eqx.tree_at(lambda t: getattr(t, name), problem["cosmo"], getattr(problem["cosmo"], name) + s * h)
            with _engine_promotion():
                g = problem["growth_fn"](c)
                x0, p0 = problem["ics_fn"](c, g)
            vals.append(value((x0, p0, c, g)))
        fd = (vals[0] - vals[1]) / (2 * h)
        assert _total_derivative(problem, grads, _direction(name)) == pytest.approx(fd, rel=1e-5)


def test_kdk_factors_strict_dtypes(problem):
    cosmo, growth = problem["cosmo"], problem["growth"]
    a = jnp.asarray(step_grid(A_INIT, 1.0, 3))
    f = kdk_factors(cosmo, growth, a)
    assert f.shape == (3, 3) and f.dtype == jnp.float64
    # Linear-theory sanity: the kick and drift factors are positive, and Σ drift·G₁ = ΔD₁.
    assert bool(jnp.all(f > 0))
    ac = 0.5 * (a[:-1] + a[1:])
    total = jnp.sum(f[:, 1] * growth.G1(cosmo, ac))
    assert float(total) == pytest.approx(float(growth.D1(a[-1]) - growth.D1(a[0])), rel=1e-12)
