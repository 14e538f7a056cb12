import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxcluster.nbody.mesh import _paint_cic_raw, _read_cic_raw, force_from_density, paint_cic, read_cic

SHAPE = (8, 6, 10)

seeds = st.integers(0, 2**31 - 1)


def _particles(seed, n=50, spread=3.0):
    rng = np.random.default_rng(seed)
    # Positions well outside [0, n) too: painting wraps periodically.
    pos = rng.uniform(-spread * 8, spread * 10, (n, 3))
    return jnp.asarray(pos), jnp.asarray(rng.uniform(0.1, 2.0, n)), jnp.asarray(rng.normal(size=SHAPE))


@settings(max_examples=20, deadline=None)
@given(seeds)
def test_paint_conserves_mass(seed):
    pos, mass, _ = _particles(seed)
    mesh = paint_cic(pos, mass, SHAPE)
    assert float(mesh.sum()) == pytest.approx(float(mass.sum()), rel=1e-13)
    assert float(mesh.min()) >= 0.0


@settings(max_examples=20, deadline=None)
@given(seeds)
def test_paint_read_adjoint(seed):
    pos, mass, field = _particles(seed)
    lhs = jnp.vdot(paint_cic(pos, mass, SHAPE), field)
    rhs = jnp.vdot(mass, read_cic(field, pos))
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)


@settings(max_examples=15, deadline=None)
@given(seeds, st.tuples(st.integers(-9, 9), st.integers(-9, 9), st.integers(-9, 9)))
def test_translation_invariance(seed, shift):
    pos, mass, _ = _particles(seed)
    shifted = paint_cic(pos + jnp.asarray([shift], dtype=pos.dtype), mass, SHAPE)
    np.testing.assert_allclose(shifted, jnp.roll(paint_cic(pos, mass, SHAPE), shift, axis=(0, 1, 2)), atol=1e-12)


def test_read_reproduces_trilinear_fields():
    # CIC interpolation is exact for fields linear in each coordinate (away from the wrap).
    x, y, z = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    field = jnp.asarray(1.0 + 0.5 * x - 0.25 * y + 0.125 * z + 0.01 * x * y * z)
    pos = jnp.asarray(np.random.default_rng(0).uniform(0, 5, (40, 3)))
    p = np.asarray(pos)
    expected = 1.0 + 0.5 * p[:, 0] - 0.25 * p[:, 1] + 0.125 * p[:, 2] + 0.01 * p[:, 0] * p[:, 1] * p[:, 2]
    np.testing.assert_allclose(read_cic(field, pos), expected, rtol=1e-12)


def test_read_channels_equal_separate_reads():
    pos, _, field = _particles(3)
    f3 = jnp.stack([field, 2 * field, -field], axis=-1)
    out = read_cic(f3, pos)
    np.testing.assert_allclose(out[:, 1], 2 * read_cic(field, pos), rtol=1e-12)


@pytest.mark.parametrize("channels", [(), (3,)])
def test_custom_vjps_match_plain_autodiff(channels):
    pos, mass, field = _particles(7)
    key = jax.random.key(1)
    if channels:
        mass = jnp.stack([mass, -mass, 0.5 * mass], axis=-1)
        field = jnp.stack([field, field**2, -field], axis=-1)
    cot_mesh = jax.random.normal(key, SHAPE + channels, dtype=pos.dtype)
    cot_pts = jax.random.normal(key, (pos.shape[0], *channels), dtype=pos.dtype)
    # paint
    _, vjp = jax.vjp(lambda x, m: paint_cic(x, m, SHAPE), pos, mass)
    _, vjp_raw = jax.vjp(lambda x, m: _paint_cic_raw(x, m, SHAPE), pos, mass)
    for a, b in zip(vjp(cot_mesh), vjp_raw(cot_mesh)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # read
    _, vjp = jax.vjp(read_cic, field, pos)
    _, vjp_raw = jax.vjp(lambda f, x: _read_cic_raw(f, x, SHAPE), field, pos)
    for a, b in zip(vjp(cot_pts), vjp_raw(cot_pts)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_position_gradient_vs_finite_differences():
    pos, mass, field = _particles(11, n=5)
    f = lambda x: jnp.sum(read_cic(field, x) ** 2) + jnp.sum(paint_cic(x, mass, SHAPE) * field)  # noqa: E731
    g = jax.grad(f)(pos)
    h = 1e-6
    for i, j in [(0, 0), (2, 1), (4, 2)]:
        e = jnp.zeros_like(pos).at[i, j].set(h)
        assert float(g[i, j]) == pytest.approx(float((f(pos + e) - f(pos - e)) / (2 * h)), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("gradient", ["exact", "fd4"])
def test_force_of_plane_wave(gradient):
    # δ = A cos(k x) ⇒ F = −∇∇⁻²δ = −(A/k) sin(k x) x̂ (exact); fd4 multiplies by (8 sin k − sin 2k)/(6k).
    shape = (32, 4, 4)
    n, A, m = 32, 0.3, 3
    k = 2 * np.pi * m / n
    x = np.arange(n)[:, None, None] * np.ones(shape)
    delta = A * np.cos(k * x)
    F = force_from_density(jnp.fft.rfftn(jnp.asarray(delta)), shape, gradient)
    factor = 1.0 if gradient == "exact" else (8 * np.sin(k) - np.sin(2 * k)) / (6 * k)
    np.testing.assert_allclose(F[..., 0], -A / k * factor * np.sin(k * x), atol=1e-12)
    np.testing.assert_allclose(F[..., 1:], 0.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 8, 20)])
def test_fd4_force_real_space_equals_fourier_symbol(shape):
    # force_from_density applies fd4 as a real-space stencil on φ; the Fourier
    # symbol i(8 sin k − sin 2k)/6 applied to δ_k/k² must give the same field.
    from jaxcluster.nbody.mesh import gradient_kernel, rfft_wavevectors

    delta = np.random.default_rng(3).normal(size=shape)
    delta_k = jnp.fft.rfftn(jnp.asarray(delta))
    kvec = rfft_wavevectors(shape, dtype=delta_k.real.dtype)
    k2 = sum(ki**2 for ki in kvec)
    inv_k2 = jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)
    ref = np.stack([np.fft.irfftn(1j * np.asarray(gradient_kernel(ki, "fd4") * inv_k2) * np.asarray(delta_k), s=shape, axes=(0, 1, 2)) for ki in kvec], axis=-1)
    F = force_from_density(delta_k, shape, "fd4")
    np.testing.assert_allclose(F, ref, atol=1e-12 * np.abs(ref).max() + 1e-13)


def test_bad_positions_raise():
    # The jaxtyping hook (tests only) rejects the shape first; users get our ValueError.
    with pytest.raises((ValueError, TypeError), match="pos|n_ptcl 3"):
        paint_cic(jnp.zeros((5, 2)), jnp.ones(5), SHAPE)


@pytest.mark.parametrize("gradient", ["fd4", "exact"])
def test_read_force_equals_read_of_force_mesh(gradient):
    # read_force skips the force mesh for fd4 (stencil on a padded φ); values and
    # gradients must be those of read_cic(force_from_density(...)).
    from jaxcluster.nbody.mesh import read_force

    shape = (12, 8, 10)
    rng = np.random.default_rng(5)
    delta_k = jnp.fft.rfftn(jnp.asarray(rng.normal(size=shape)))
    pos = jnp.asarray(rng.uniform(-5, 15, (40, 3)))
    ref = read_cic(force_from_density(delta_k, shape, gradient), pos)
    np.testing.assert_allclose(read_force(delta_k, pos, shape, gradient), ref, rtol=1e-11, atol=1e-13)
    cot = jnp.asarray(rng.normal(size=(40, 3)))
    g = jax.grad(lambda d, x: jnp.vdot(read_force(d, x, shape, gradient), cot), argnums=(0, 1))(delta_k, pos)
    g_ref = jax.grad(lambda d, x: jnp.vdot(read_cic(force_from_density(d, shape, gradient), x), cot), argnums=(0, 1))(delta_k, pos)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
