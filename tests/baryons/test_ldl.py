"""LDL layers: B-spline basis, filters, displacement (identity, symmetries, plane wave), activation, gradients."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.flatten_util import ravel_pytree

from jaxcluster.baryons.ldl import (
    DEFAULT_K_MAX,
    DENSITY_FLOOR,
    LDL,
    ActivationLayer,
    BSplineFilter,
    DisplacementLayer,
    ParametricFilter,
    bspline_basis,
    clamped_knots,
    paint_one_plus_delta,
)
from jaxcluster.baryons.ldl import _radial_operator
from jaxcluster.nbody.mesh import gradient_kernel, read_cic, rfft_wavevectors

N = 16
CELL = 0.39
BOX = N * CELL
SHAPE = (N, N, N)


def _particles(key, n_side=N, box=BOX, jitter=0.3):
    """A perturbed lattice of n_side³ particles [h⁻¹ Mpc] (so the density has structure and empty cells)."""
    q = (jnp.arange(n_side, dtype=jnp.float64) + 0.5) * (box / n_side)
    grid = jnp.stack(jnp.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    return grid + jitter * (box / n_side) * jax.random.normal(key, grid.shape, dtype=jnp.float64)


_apply = eqx.filter_jit(lambda m, x: m(x))
_run = eqx.filter_jit(lambda m, pos: m(pos, BOX, SHAPE))


def _rich_ldl(key, filter="bspline", **kw):
    """An LDL away from the identity: visible displacements, a ReLU that clips some cells, μ ≠ 1."""
    ldl = LDL.init(key, filter, alpha=0.02 if filter == "bspline" else 0.05, **kw)
    ldl = eqx.tree_at(lambda m: m.activation, ldl, ActivationLayer(b0=0.4, b1=1.5, mu=1.3))
    return eqx.tree_at(lambda m: m.displacements[1].gamma, ldl, jnp.asarray(1.2))


# ------------------------------------------------------------------ B-splines and filters


def test_bspline_basis_is_a_partition_of_unity():
    knots = clamped_knots(DEFAULT_K_MAX, 8)
    assert knots.size == 8 + 8 and knots[0] == 0.0 and knots[-1] == DEFAULT_K_MAX
    x = jnp.linspace(0.0, DEFAULT_K_MAX, 2001)
    B = bspline_basis(x, knots)
    assert B.shape == (2001, 12)
    assert float(jnp.min(B)) >= 0.0
    # Sums of ≤ 4 products of ratios: a few ulp.
    np.testing.assert_allclose(np.asarray(jnp.sum(B, -1)), 1.0, rtol=0, atol=1e-14)
    # Clamped: the end functions are 1 at the ends (the closed last interval covers k_max).
    assert float(B[0, 0]) == 1.0 and float(B[-1, -1]) == 1.0


def test_bspline_reproduces_a_cubic():
    """Cubics lie in the spline space: the least-squares fit is exact to round-off."""
    knots = clamped_knots(3.0, 5)
    x = jnp.linspace(0.0, 3.0, 301)
    y = 0.3 - 1.2 * x + 0.7 * x**2 - 0.25 * x**3
    B = np.asarray(bspline_basis(x, knots))
    coef, *_ = np.linalg.lstsq(B, np.asarray(y), rcond=None)
    np.testing.assert_allclose(B @ coef, np.asarray(y), rtol=0, atol=1e-12)
    # And off the fit points.
    x2 = jnp.asarray([0.01, 0.77, 1.5, 2.999])
    y2 = 0.3 - 1.2 * x2 + 0.7 * x2**2 - 0.25 * x2**3
    np.testing.assert_allclose(np.asarray(bspline_basis(x2, knots)) @ coef, np.asarray(y2), atol=1e-12)


def test_bspline_filter_is_the_inverse_laplacian_at_init_and_constant_beyond_k_max(getkey):
    k = jnp.asarray([0.0, 0.1, 1.0, DEFAULT_K_MAX, 2 * DEFAULT_K_MAX])
    v0 = np.asarray(_apply(BSplineFilter(), k))
    assert v0[0] == 0.0  # no potential for the k = 0 mode
    np.testing.assert_allclose(v0[1:] * np.asarray(k[1:]) ** 2, 1.0, rtol=1e-14)
    g = BSplineFilter(jax.random.normal(getkey(), (12,), dtype=jnp.float64))
    v = np.asarray(_apply(g, k)) * np.asarray(k) ** 2  # the modulation 1 + S
    assert v[4] == pytest.approx(v[3], rel=1e-14)  # continued as a constant beyond k_max
    # Clamped: 1 + S(k_max) = 1 + Ξ_last; near 0, 1 + S → 1 + Ξ_0.
    assert float(_apply(g, jnp.asarray(1e-6))) * 1e-12 == pytest.approx(1 + float(g.coeffs[0]), rel=1e-5)
    assert v[3] == pytest.approx(1 + float(g.coeffs[-1]), abs=1e-13)
    # Shape-preserving.
    assert _apply(g, jnp.ones((3, 4, 5))).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="coeffs"):
        BSplineFilter(jnp.zeros(5))


def test_parametric_filter_matches_formula_and_is_finite_at_zero():
    f = ParametricFilter(k_l=2.0, k_h=0.3, n=-1.5)
    for k in (0.05, 0.4, 1.0, 3.0):
        expected = -math.exp(-(k**2) / 2.0**2) * math.exp(-(0.3**2) / k**2) * k**-1.5
        assert float(f(jnp.asarray(k))) == pytest.approx(expected, rel=1e-13)
    assert float(f(jnp.asarray(0.0))) == 0.0
    g = jax.grad(lambda m: jnp.sum(m(jnp.asarray([0.0, 0.5, 2.0]))))(f)
    assert all(np.isfinite(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(g))
    assert float(f.k_l) == pytest.approx(2.0) and float(f.k_h) == pytest.approx(0.3)


# ------------------------------------------------------------------ painting and displacement


def test_one_plus_delta_has_mean_one(getkey):
    pos = jax.random.uniform(getkey(), (1000, 3), dtype=jnp.float64) * 20.0 - 5.0  # unwrapped positions
    opd = paint_one_plus_delta(pos, 15.0, (16, 8, 12))
    assert opd.shape == (16, 8, 12)
    assert float(jnp.mean(opd)) == pytest.approx(1.0, abs=1e-14)  # CIC conserves mass; round-off only
    assert float(jnp.min(opd)) >= 0.0


def test_displacement_with_zero_alpha_is_identity(getkey):
    pos = _particles(getkey())
    layer = DisplacementLayer(gamma=1.7, alpha=0.0, filter=BSplineFilter(jnp.ones(12)))
    out = _run(layer, pos)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(pos))


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_plane_wave_displacement_matches_analytic(gamma):
    """1 + δ = 1 + A cos(kx), Ô = 1/k²: dx = α γ ∂_x ∇⁻²(−δ) = −α γ (A/k) sin(kx) at linear order.

    The particles are a lattice at cell centres displaced by ψ = −(A/k) sin(kq),
    so that 1 + δ ≈ 1 + A cos(kx). On the mesh, CIC painting of the
    half-offset lattice multiplies the wave by sinc(k/2) (sin x / x, k in rad
    per cell) and reading at mid-cell by cos(k/2): with those windows the
    prediction is good to O(A); without them, to (2/3)(k/2)² ≈ 0.64 %.
    """
    nx, m, A, alpha = 32, 1, 1e-3, 0.3
    box = (float(nx), 4.0, 4.0)  # 1 h⁻¹ Mpc cells
    shape = (nx, 4, 4)
    k = 2 * math.pi * m / nx  # h Mpc⁻¹ = rad per cell here
    axes = [jnp.arange(n, dtype=jnp.float64) + 0.5 for n in shape]
    q = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    psi = -(A / k) * jnp.sin(k * q[:, 0])
    pos = q.at[:, 0].add(psi)
    # The density really is the plane wave (windowed by sinc(k/2)).
    opd = jax.jit(paint_one_plus_delta, static_argnums=(1, 2))(pos, box, shape)
    x_nodes = np.arange(nx)
    window_paint = math.sin(k / 2) / (k / 2)
    np.testing.assert_allclose(np.asarray(opd[:, 0, 0]), 1 + A * window_paint * np.cos(k * x_nodes), atol=5 * A**2)

    layer = DisplacementLayer(gamma=gamma, alpha=alpha, filter=BSplineFilter())
    dx = np.asarray(eqx.filter_jit(lambda m, p: m.displacement(p, box, shape))(layer, pos))
    amp = alpha * gamma * A / k
    bare = -amp * np.sin(k * np.asarray(pos[:, 0]))
    windowed = bare * window_paint * math.cos(k / 2)
    err_windowed = np.max(np.abs(dx[:, 0] - windowed)) / amp
    err_bare = np.max(np.abs(dx[:, 0] - bare)) / amp
    # Left over at second order: the δ² term of (1+δ)^γ, relative size (γ − 1) A / 2
    # (measured 4.8e-4 at γ = 2), and O(A²) from the ψ-shifted reads (1.8e-6 at γ = 1).
    assert err_windowed < 1e-5 + 1.1 * (gamma - 1) * A / 2
    assert err_bare < 0.01  # CIC windows: 1 − sinc(k/2) cos(k/2) = 0.64 %
    np.testing.assert_allclose(dx[:, 1:], 0.0, atol=1e-15 * alpha)


_KEY_SYM = jax.random.key(7)
_POS_SYM = _particles(jax.random.fold_in(_KEY_SYM, 0))
# The seed's layers, and the cheap ones: fd4 on φ with the source painted from every 3rd particle
# (the sub-sample is chosen by index, so a moved particle set keeps it).
_FIELD_SYM = {
    name: jax.jit(lambda p, m=_rich_ldl(jax.random.fold_in(_KEY_SYM, 1), **kw): m(p, BOX, SHAPE))
    for name, kw in (("exact", {}), ("fd4_stride3", dict(gradient="fd4", source_stride=3)))
}
_REF_SYM = {name: f(_POS_SYM) for name, f in _FIELD_SYM.items()}
variants = pytest.mark.parametrize("variant", list(_FIELD_SYM))


@variants
@settings(max_examples=8, deadline=None)
@given(shift=st.tuples(*(st.integers(-2 * N, 2 * N),) * 3))
def test_translation_by_whole_cells_rolls_the_field(variant, shift):
    moved = _POS_SYM + jnp.asarray(shift, dtype=jnp.float64)[None, :] * CELL
    out = _FIELD_SYM[variant](moved)
    # Round-off of the shifted coordinates (|pos| ≲ 3 boxes) propagated through two layers.
    np.testing.assert_allclose(np.asarray(out), np.asarray(jnp.roll(_REF_SYM[variant], shift, axis=(0, 1, 2))), atol=1e-10)


@variants
@settings(max_examples=6, deadline=None)
@given(perm=st.permutations([0, 1, 2]))
def test_axis_permutation_transposes_the_field(variant, perm):
    out = _FIELD_SYM[variant](_POS_SYM[:, jnp.asarray(perm)])
    np.testing.assert_allclose(np.asarray(out), np.asarray(jnp.transpose(_REF_SYM[variant], perm)), atol=1e-10)


@variants
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotation_by_90_degrees_rotates_the_field(variant, axis):
    # A 90° rotation about `axis` maps the CIC nodes i·cell onto nodes (periodically):
    # (u, v) → (−v mod L, u) in the plane of the two other axes, so F'[a, b] = F[b, −a mod n].
    u, v = [i for i in range(3) if i != axis]
    moved = _POS_SYM.at[:, u].set(jnp.mod(-_POS_SYM[:, v], BOX)).at[:, v].set(_POS_SYM[:, u])
    out = np.asarray(_FIELD_SYM[variant](moved))
    ref = np.asarray(_REF_SYM[variant])
    idx = np.indices(SHAPE)
    src = list(idx)
    src[u], src[v] = idx[v], (-idx[u]) % N
    np.testing.assert_allclose(out, ref[tuple(src)], atol=1e-10)
    assert np.abs(out - ref).max() > 1e-3  # the field is not trivially symmetric


def test_gradient_kinds_and_validation(getkey):
    pos = _particles(getkey())
    exact = _run(DisplacementLayer(alpha=0.02), pos)
    fd4 = _run(DisplacementLayer(alpha=0.02, gradient="fd4"), pos)
    assert float(jnp.max(jnp.abs(exact - pos))) > 1e-3
    # Both are gradients of the same potential; they differ at high k only.
    np.testing.assert_allclose(np.asarray(fd4 - pos), np.asarray(exact - pos), atol=0.5 * float(jnp.max(jnp.abs(exact - pos))))
    # The fd4 layer differentiates φ in real space (one inverse FFT): the same as the fd4 symbol in Fourier space.
    layer = DisplacementLayer(alpha=0.02, gradient="fd4")
    cells = [BOX / n for n in SHAPE]
    src_k = jnp.fft.rfftn(jnp.maximum(paint_one_plus_delta(pos, BOX, SHAPE), DENSITY_FLOOR) ** layer.gamma)
    phi_k = _radial_operator(layer.filter, SHAPE, cells, pos.dtype).astype(src_k.dtype) * src_k
    mesh = jnp.stack([jnp.fft.irfftn(1j * (gradient_kernel(k, "fd4") / c).astype(src_k.dtype) * phi_k, s=SHAPE)
                      for k, c in zip(rfft_wavevectors(SHAPE, dtype=pos.dtype), cells)], axis=-1)
    fourier = layer.alpha * read_cic(mesh, pos / jnp.asarray(cells)[None, :])
    np.testing.assert_allclose(np.asarray(fd4 - pos), np.asarray(fourier), rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(fourier))))
    with pytest.raises(ValueError, match="gradient"):
        DisplacementLayer(gradient="spectral")
    with pytest.raises(ValueError, match="source_stride"):
        DisplacementLayer(source_stride=0)
    with pytest.raises(ValueError, match="mesh_shape"):
        eqx.filter_eval_shape(DisplacementLayer(), pos, BOX, (N, N, 1))
    with pytest.raises(ValueError, match="box_size"):
        eqx.filter_eval_shape(DisplacementLayer(), pos, -1.0, SHAPE)
    with pytest.raises(ValueError, match="filter"):
        LDL.init(filter="unet")


def test_source_stride_paints_the_source_from_a_subsample(getkey):
    layer = DisplacementLayer(alpha=0.02, gradient="fd4")
    strided = DisplacementLayer(alpha=0.02, gradient="fd4", source_stride=3)
    # Exact: with every particle repeated three times in a row, pos[::3] is the original set.
    pos = _particles(getkey())
    rep = jnp.repeat(pos, 3, axis=0)
    np.testing.assert_allclose(np.asarray(_run(strided, rep)[::3]), np.asarray(_run(layer, pos)), rtol=0, atol=1e-13)
    # Statistically, on a clustered set (four Gaussian halos of σ = 0.5 h⁻¹ Mpc over a uniform
    # background, 8 particles per cell), a 1/7 source sample keeps the displacement: the potential
    # (Ô = 1/k²) suppresses the sample's shot noise. (On a 50 h⁻¹ Mpc PM box, 128³: correlation 1.000.)
    k1, k2, k3 = jax.random.split(getkey(), 3)
    centres = jax.random.uniform(k1, (4, 3), dtype=jnp.float64) * BOX
    halo = centres[jnp.arange(2 * N**3) % 4] + 0.5 * jax.random.normal(k2, (2 * N**3, 3), dtype=jnp.float64)
    many = jnp.concatenate([halo, jax.random.uniform(k3, (6 * N**3, 3), dtype=jnp.float64) * BOX])
    full = np.asarray(_run(layer, many) - many)
    sub = np.asarray(_run(DisplacementLayer(alpha=0.02, gradient="fd4", source_stride=7), many) - many)
    corr = np.corrcoef(full.ravel(), sub.ravel())[0, 1]
    assert corr > 0.95, corr
    assert np.std(sub) == pytest.approx(np.std(full), rel=0.15)


# ------------------------------------------------------------------ activation and LDL


def test_activation_is_relu_formula_and_nonnegative(getkey):
    act = ActivationLayer(b0=0.8, b1=2.5, mu=1.4)
    assert float(act.b1) == pytest.approx(2.5, rel=1e-14)  # softplus(inverse softplus)
    x = jax.random.uniform(getkey(), (8, 8, 8), dtype=jnp.float64) * 3.0
    x = x.at[0, 0, 0].set(0.0)
    out = act(x)
    assert float(jnp.min(out)) >= 0.0
    expected = np.maximum(2.5 * np.maximum(np.asarray(x), 1e-10) ** 1.4 - 0.8, 0.0)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-13, atol=1e-15)
    assert 0 < int(jnp.sum(out == 0)) < x.size  # the ReLU does clip here
    with pytest.raises(ValueError, match="b1"):
        ActivationLayer(b1=-1.0)


@pytest.mark.parametrize("filter", ["bspline", "parametric"])
def test_ldl_init_is_near_identity(getkey, filter):
    pos = _particles(getkey())
    ldl = LDL.init(filter=filter)
    assert len(ldl.displacements) == 2
    field = _run(ldl, pos)
    opd = jax.jit(paint_one_plus_delta, static_argnums=(1, 2))(pos, BOX, SHAPE)
    assert field.shape == SHAPE
    assert float(jnp.mean(field)) == pytest.approx(1.0, abs=1e-8)  # mass conserved, floor on empty cells
    # Small α: the field stays close to the input density.
    assert float(jnp.max(jnp.abs(field - opd))) < 0.2 * float(jnp.max(opd))
    keyed = LDL.init(getkey(), filter, n_displacements=3)
    assert len(keyed.displacements) == 3
    assert float(keyed.displacements[0].gamma) != float(keyed.displacements[1].gamma)


def _fd_check(f, x, direction, h, rtol):
    g = jax.grad(f)(x)
    fd = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    ad = jnp.vdot(g, direction)
    assert np.isfinite(float(ad))
    assert float(ad) == pytest.approx(float(fd), rel=rtol, abs=rtol * float(jnp.linalg.norm(g)))


@pytest.mark.parametrize("filter", ["bspline", "parametric"])
def test_gradient_wrt_parameters_matches_finite_differences(getkey, filter):
    pos = _particles(getkey())
    ldl = _rich_ldl(getkey(), filter)
    weight = jax.random.normal(getkey(), SHAPE, dtype=jnp.float64)
    params, static = eqx.partition(ldl, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def loss(theta):
        return jnp.sum(weight * eqx.combine(unravel(theta), static)(pos, BOX, SHAPE))

    g = jax.grad(loss)(flat)
    assert bool(jnp.all(jnp.isfinite(g)))
    h = 1e-6
    eye = jnp.eye(flat.size, dtype=flat.dtype)
    fd = jnp.stack([(loss(flat + h * e) - loss(flat - h * e)) / (2 * h) for e in eye])
    # Central differences, h = 1e-6, float64: truncation ~h², round-off ~1e-16 |L| / h.
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(g))))
    assert float(jnp.min(jnp.abs(g))) >= 0.0 and float(jnp.max(jnp.abs(g))) > 0.0


def test_gradient_wrt_positions_matches_finite_differences(getkey):
    pos = _particles(getkey(), n_side=8)
    ldl = _rich_ldl(getkey())
    weight = jax.random.normal(getkey(), SHAPE, dtype=jnp.float64)
    loss = jax.jit(lambda p: jnp.sum(weight * ldl(p, BOX, SHAPE)))
    for _ in range(3):
        v = jax.random.normal(getkey(), pos.shape, dtype=jnp.float64)
        _fd_check(loss, pos, v / jnp.linalg.norm(v), 1e-6, 1e-5)


def test_float32_runs_and_keeps_dtype(getkey):
    pos = _particles(getkey()).astype(jnp.float32)
    out = _run(_rich_ldl(getkey()), pos)
    assert out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("filter", [BSplineFilter(jnp.linspace(-0.2, 0.3, 12)), ParametricFilter()])
def test_radial_table_operator_equals_direct_evaluation(filter):
    for shape, cells in (((16, 16, 16), [0.39] * 3), ((8, 16, 16), [0.39] * 3)):  # table path, direct path
        kvec = rfft_wavevectors(shape, dtype=jnp.float64)
        direct = np.asarray(filter(jnp.sqrt(sum((k / c) ** 2 for k, c in zip(kvec, cells)))))
        fast = np.asarray(_radial_operator(filter, shape, cells, jnp.float64))
        np.testing.assert_allclose(fast, direct, rtol=1e-12, atol=1e-300)
