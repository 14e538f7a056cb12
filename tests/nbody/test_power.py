"""Tests of jaxcluster.nbody.power against analytic references.

Fields are made here with NumPy, independently of the code under test; the
expected shell averages are computed on the full (complex-FFT) k grid with
integer arithmetic, so they check the rfft half-space weighting too.
"""

import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jaxtyping import TypeCheckError

from jaxcluster.nbody.power import (
    cic_window,
    compensate_cic,
    correlation_coefficient,
    cross_power_spectrum,
    default_k_edges,
    power_spectrum,
    transfer_function,
)

# ---------------------------------------------------------------- helpers


def _full_k_units(shape, box):
    """|k| / k_f (k_f of the longest side) squared, as exact integers, on the full grid."""
    L = max(box)
    ratios = [L / b for b in box]
    assert all(r == int(r) for r in ratios)  # test setups keep L_max / L_i integral
    m = [np.fft.fftfreq(n, 1.0 / n).astype(np.int64) * int(r) for n, r in zip(shape, ratios)]
    q2 = m[0][:, None, None] ** 2 + m[1][None, :, None] ** 2 + m[2][None, None, :] ** 2
    return q2, 2 * math.pi / L


def _expected_default_bins(shape, box, pk):
    """Mode-averaged P_true and mode counts in the default shells (width k_f from k_f)."""
    q2, k_f = _full_k_units(shape, box)
    q = np.vectorize(math.isqrt)(q2)  # floor(|k| / k_f), exact
    n_shells = shape[int(np.argmax(box))] // 2 - 1
    shell = q - 1  # shell j holds (j+1) k_f <= |k| < (j+2) k_f
    ok = (q2 > 0) & (shell >= 0) & (shell < n_shells)
    kk = np.sqrt(q2[ok].astype(float)) * k_f
    n = np.bincount(shell[ok], minlength=n_shells)
    p = np.bincount(shell[ok], weights=pk(kk), minlength=n_shells) / n
    kmean = np.bincount(shell[ok], weights=kk, minlength=n_shells) / n
    return kmean, p, n


def _gaussian_field(shape, box, pk, seed):
    """Gaussian random field with power spectrum pk [h⁻³ Mpc³]: white noise → rfft → × sqrt(P / V_cell)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(shape)
    kx, ky, kz = np.meshgrid(
        2 * np.pi * np.fft.fftfreq(shape[0], box[0] / shape[0]),
        2 * np.pi * np.fft.fftfreq(shape[1], box[1] / shape[1]),
        2 * np.pi * np.fft.rfftfreq(shape[2], box[2] / shape[2]),
        indexing="ij",
    )
    k = np.sqrt(kx**2 + ky**2 + kz**2)
    v_cell = np.prod(box) / np.prod(shape)
    amp = np.sqrt(pk(np.where(k > 0, k, 1.0)) / v_cell)
    amp[0, 0, 0] = 0.0
    # <|w_k|²> = N, so P_meas = V/N² · N · P/V_cell = P.
    return np.fft.irfftn(np.fft.rfftn(white) * amp, s=shape, axes=(0, 1, 2))


def _power_law(k):
    return 1e3 * (k / 0.1) ** -2.0  # h⁻³ Mpc³


def _chi2(p_meas, p_exp, n_modes):
    # n_modes counts k and -k: n_modes / 2 independent complex modes, each |δ_k|²/P ~ Exp(1).
    sigma2 = p_exp**2 * 2.0 / n_modes
    return float(np.sum((p_meas - p_exp) ** 2 / sigma2))


def _grid_coords(shape, box):
    axes = [np.arange(n) * b / n for n, b in zip(shape, box)]
    return np.meshgrid(*axes, indexing="ij")


# ---------------------------------------------------------------- (1) plane waves


@pytest.mark.parametrize("m", [(3, 0, 0), (0, 0, 5), (1, 2, 3), (0, -2, 1), (2, 2, 0)])
def test_plane_wave_single_bin(m):
    """δ = A cos(k₀·x + φ): all power in the shell of |k₀|, P·N_k = V A²/2 there.

    δ_k = (A N / 2) e^{±iφ} at ±k₀. Whether both are stored (k_z = 0, weight 1
    each) or only +k₀ (weight 2), the shell sum of |δ_k|² is 2 (A N/2)², so
    P = V/N² · 2 (A N / 2)² / N_k = V A² / (2 N_k); i.e. P N_k = V ⟨δ²⟩.
    """
    shape, box = (16, 16, 16), (80.0, 80.0, 80.0)
    A, phi = 0.7, 0.4
    X, Y, Z = _grid_coords(shape, box)
    k0 = [2 * np.pi * mi / b for mi, b in zip(m, box)]
    delta = A * np.cos(k0[0] * X + k0[1] * Y + k0[2] * Z + phi)
    k, p, n_modes = power_spectrum(jnp.asarray(delta), box)
    edges = default_k_edges(shape, box)
    j = int(np.searchsorted(edges, np.linalg.norm(k0) * (1 + 1e-12), side="right")) - 1
    V = np.prod(box)
    expected = np.zeros(p.shape)
    expected[j] = V * A**2 / (2 * int(n_modes[j]))
    np.testing.assert_allclose(np.asarray(p), expected, rtol=1e-10, atol=1e-10 * expected[j])


def test_parseval_and_k0_excluded():
    """One shell over all k (edge at 0): P N_k = V var(δ) — the mean (k = 0) is excluded."""
    shape, box = (8, 12, 10), (40.0, 60.0, 50.0)
    delta = 3.0 + np.random.default_rng(1).standard_normal(shape)
    k, p, n = power_spectrum(jnp.asarray(delta), box, k_edges=jnp.asarray([0.0, 100.0]))
    assert int(n[0]) == np.prod(shape) - 1
    np.testing.assert_allclose(float(p[0]) * int(n[0]), np.prod(box) * np.var(delta), rtol=1e-12)


# ---------------------------------------------------------------- (2) Gaussian field


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_field_recovers_power_law(seed):
    shape, box = (32, 32, 32), (200.0, 200.0, 200.0)
    delta = _gaussian_field(shape, box, _power_law, seed)
    k, p, n_modes = power_spectrum(jnp.asarray(delta), box)
    k_exp, p_exp, n_exp = _expected_default_bins(shape, box, _power_law)
    np.testing.assert_array_equal(np.asarray(n_modes), n_exp)
    np.testing.assert_allclose(np.asarray(k), k_exp, rtol=1e-12)
    p, n = np.asarray(p), n_exp.astype(float)
    # Mode-weighted mean of P/P_true has variance 2 / Σ N_k.
    mean_ratio = np.sum(n * p / p_exp) / np.sum(n)
    assert abs(mean_ratio - 1) < 3 * np.sqrt(2 / np.sum(n))
    dof = len(p)
    assert _chi2(p, p_exp, n) < dof + 4 * np.sqrt(2 * dof)


# ---------------------------------------------------------------- (3) translations


_SHAPE3, _BOX3 = (12, 16, 10), (60.0, 80.0, 50.0)
_FIELD3 = _gaussian_field(_SHAPE3, _BOX3, _power_law, 7)
_P3 = power_spectrum(jnp.asarray(_FIELD3), _BOX3)[1]


@settings(max_examples=20, deadline=None)
@given(st.integers(-12, 12), st.integers(-16, 16), st.integers(-10, 10))
def test_translation_invariance(sx, sy, sz):
    rolled = np.roll(_FIELD3, (sx, sy, sz), axis=(0, 1, 2))
    _, p, _ = power_spectrum(jnp.asarray(rolled), _BOX3)
    # Round-off of an FFT of N cells: a few ε·log N.
    np.testing.assert_allclose(np.asarray(p), np.asarray(_P3), rtol=1e-12)


# ---------------------------------------------------------------- (4) r and T


def test_correlation_and_transfer():
    shape, box = (16, 16, 16), (100.0, 100.0, 100.0)
    d = jnp.asarray(_gaussian_field(shape, box, _power_law, 3))
    _, r_same, _ = correlation_coefficient(d, d, box)
    _, r_neg, _ = correlation_coefficient(d, -d, box)
    _, t2, _ = transfer_function(d, 2.0 * d, box)
    np.testing.assert_allclose(np.asarray(r_same), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(r_neg), -1.0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(t2), 2.0, rtol=1e-12)
    # Cross power of a field with itself is its auto power; independent fields decorrelate.
    _, p, _ = power_spectrum(d, box)
    _, p_aa, _ = cross_power_spectrum(d, d, box)
    np.testing.assert_allclose(np.asarray(p_aa), np.asarray(p), rtol=1e-12)
    e = jnp.asarray(_gaussian_field(shape, box, _power_law, 4))
    _, r_ind, n = correlation_coefficient(d, e, box)
    # Var(r) ≈ 2 / N_k for independent Gaussian fields.
    z = np.asarray(r_ind) * np.sqrt(np.asarray(n) / 2.0)
    assert np.sum(z**2) < len(z) + 4 * np.sqrt(2 * len(z))


# ---------------------------------------------------------------- (5) rectangular boxes


def test_rectangular_box_matches_cube():
    pk = _power_law
    rect_shape, rect_box = (32, 32, 64), (100.0, 100.0, 200.0)
    cube_shape, cube_box = (64, 64, 64), (200.0, 200.0, 200.0)
    k_r, p_r, n_r = power_spectrum(jnp.asarray(_gaussian_field(rect_shape, rect_box, pk, 11)), rect_box)
    k_c, p_c, n_c = power_spectrum(jnp.asarray(_gaussian_field(cube_shape, cube_box, pk, 12)), cube_box)
    ke_r, pe_r, ne_r = _expected_default_bins(rect_shape, rect_box, pk)
    ke_c, pe_c, _ = _expected_default_bins(cube_shape, cube_box, pk)
    np.testing.assert_array_equal(np.asarray(n_r), ne_r)  # same shells, fewer modes
    assert p_r.shape == p_c.shape
    np.testing.assert_allclose(np.asarray(k_r), ke_r, rtol=1e-12)
    # Both are unbiased estimates of their shell averages; compare ratios to the truth.
    ratio_r, ratio_c = np.asarray(p_r) / pe_r, np.asarray(p_c) / pe_c
    var = 2.0 / np.asarray(n_r) + 2.0 / np.asarray(n_c)
    chi2 = np.sum((ratio_r - ratio_c) ** 2 / var)
    assert chi2 < len(var) + 4 * np.sqrt(2 * len(var))
    # Bias check: the mode-weighted mean ratio is consistent with 1.
    n = np.asarray(n_r, float)
    assert abs(np.sum(n * ratio_r) / np.sum(n) - 1) < 3 * np.sqrt(2 / np.sum(n))


def test_plane_wave_along_long_axis_of_rectangular_box():
    shape, box = (8, 8, 16), (50.0, 50.0, 100.0)
    _, _, Z = _grid_coords(shape, box)
    delta = np.cos(2 * np.pi * Z / box[2])  # the fundamental of the longest side
    k, p, n = power_spectrum(jnp.asarray(delta), box)
    assert float(p[0]) > 0 and np.all(np.asarray(p[1:]) < 1e-20)
    np.testing.assert_allclose(float(p[0]) * int(n[0]), np.prod(box) / 2, rtol=1e-12)


@pytest.mark.parametrize(
    "box", [(100.0, 100.0, 100.0), (100.0, 100.0), (100.0, -100.0, 200.0), (100.0, 100.0, 201.0)]
)
def test_bad_box_size_raises(box):
    delta = jnp.zeros((32, 32, 64))
    with pytest.raises(ValueError, match="box_size"):
        power_spectrum(delta, box)


def test_bad_arguments_raise():
    # Under the test suite's jaxtyping hook the annotation catches a 2-D field first.
    with pytest.raises((ValueError, TypeCheckError), match="delta"):
        power_spectrum(jnp.zeros((8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="k_edges"):
        power_spectrum(jnp.zeros((8, 8, 8)), (1.0, 1.0, 1.0), k_edges=jnp.asarray([1.0, 2.0]), n_bins=3)
    with pytest.raises((ValueError, TypeCheckError), match="delta_b"):
        cross_power_spectrum(jnp.zeros((8, 8, 8)), jnp.zeros((8, 8, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="mesh_shape"):
        compensate_cic(jnp.zeros((8, 8, 5), jnp.complex128))


def test_n_bins_and_empty_shells():
    shape, box = (16, 16, 16), (100.0, 100.0, 100.0)
    d = jnp.asarray(_gaussian_field(shape, box, _power_law, 5))
    k, p, n = power_spectrum(d, box, n_bins=5)
    assert k.shape == p.shape == n.shape == (5,)
    edges = np.linspace(2 * np.pi / 100, np.pi * 16 / 100, 6)
    assert np.all((np.asarray(k) >= edges[:-1]) & (np.asarray(k) < edges[1:]))
    # A shell with no modes: NaN power, zero count.
    k, p, n = power_spectrum(d, box, k_edges=jnp.asarray([0.070, 0.071, 0.2]))
    assert int(n[0]) == 0 and np.isnan(float(p[0])) and int(n[1]) > 0


# ---------------------------------------------------------------- (6) CIC


def test_cic_window_formula():
    shape = (8, 6, 10)
    w = np.asarray(cic_window(shape))
    assert w.shape == (8, 6, 6)
    for m in [(0, 0, 0), (1, 0, 0), (4, 3, 5), (-3, 2, 1), (2, -1, 4)]:
        expected = 1.0
        for mi, n in zip(m, shape):
            x = math.pi * mi / n  # k_i Δ / 2
            expected *= (math.sin(x) / x) ** 2 if mi else 1.0
        assert w[m[0] % 8, m[1] % 6, m[2]] == pytest.approx(expected, rel=1e-14)
    assert w[4, 3, 5] == pytest.approx((2 / math.pi) ** 6, rel=1e-14)


def test_compensate_inverts_window():
    shape = (8, 8, 6)
    f = jnp.asarray(np.random.default_rng(2).standard_normal(shape))
    f_k = jnp.fft.rfftn(f)
    smoothed_k = f_k * cic_window(shape).astype(f_k.dtype)
    np.testing.assert_allclose(np.asarray(compensate_cic(smoothed_k, shape)), np.asarray(f_k), rtol=1e-12)
    smoothed = jnp.fft.irfftn(smoothed_k, s=shape, axes=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(compensate_cic(smoothed)), np.asarray(f), atol=1e-12)


def _paint_cic_numpy(pos_cells, mass, shape):
    """Cloud-in-cell assignment to nodes at integer cell coordinates (periodic)."""
    out = np.zeros(shape)
    i0 = np.floor(pos_cells).astype(int)
    frac = pos_cells - i0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    np.where(dx, frac[:, 0], 1 - frac[:, 0])
                    * np.where(dy, frac[:, 1], 1 - frac[:, 1])
                    * np.where(dz, frac[:, 2], 1 - frac[:, 2])
                )
                idx = (i0 + np.array([dx, dy, dz])) % np.array(shape)
                np.add.at(out, (idx[:, 0], idx[:, 1], idx[:, 2]), w * mass)
    return out


def test_cic_compensation_restores_painted_power():
    """Paint a band-limited field carried by particles; compensation undoes the W² suppression.

    Particles sit on a lattice twice as fine as the mesh, offset by a quarter
    cell, with masses 1 + δ(x_p) for δ band-limited to |k| < k_Ny / 2. The
    painted field is then W(k) δ_k plus aliases that are a few per cent of
    it, so compensated power must be within 5 % of the truth while the raw
    one is suppressed by W² (≈ 0.7 at k_Ny / 2).
    """
    n, f = 16, 2
    shape, box = (n, n, n), (100.0, 100.0, 100.0)
    k_ny = np.pi * n / box[0]
    delta_k = np.fft.rfftn(_gaussian_field(shape, box, lambda k: 50.0 * (k / 0.1) ** -1.0, 8))
    kx, ky, kz = np.meshgrid(
        2 * np.pi * np.fft.fftfreq(n, box[0] / n),
        2 * np.pi * np.fft.fftfreq(n, box[0] / n),
        2 * np.pi * np.fft.rfftfreq(n, box[0] / n),
        indexing="ij",
    )
    delta_k[np.sqrt(kx**2 + ky**2 + kz**2) >= k_ny / 2] = 0.0
    delta_true = np.fft.irfftn(delta_k, s=shape, axes=(0, 1, 2))
    # Fourier-interpolate δ to the fine lattice shifted by s = Δ/4 per axis.
    nf = n * f
    fine_k = np.zeros((nf, nf, nf // 2 + 1), complex)
    lo = np.r_[0 : n // 2, nf - n // 2 : nf]
    fine_k[np.ix_(lo, lo, np.arange(n // 2 + 1))] = delta_k[np.ix_(np.r_[0 : n // 2, n // 2 : n], np.arange(n), np.arange(n // 2 + 1))]
    dx = box[0] / n
    s = dx / 4
    kfx = 2 * np.pi * np.fft.fftfreq(nf, box[0] / nf)
    kfz = 2 * np.pi * np.fft.rfftfreq(nf, box[0] / nf)
    phase = np.exp(1j * s * (kfx[:, None, None] + kfx[None, :, None] + kfz[None, None, :]))
    delta_fine = np.fft.irfftn(fine_k * phase, s=(nf,) * 3, axes=(0, 1, 2)) * f**3
    q = (np.arange(nf) + 0.5) / f  # particle positions in coarse-cell units
    pos = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    painted = _paint_cic_numpy(pos, 1.0 + delta_fine.reshape(-1), shape) / f**3 - 1.0

    edges = jnp.asarray(np.arange(1, 5) * 2 * np.pi / box[0] + 0.5 * 2 * np.pi / box[0])
    _, p_true, _ = power_spectrum(jnp.asarray(delta_true), box, k_edges=edges)
    _, p_raw, _ = power_spectrum(jnp.asarray(painted), box, k_edges=edges)
    _, p_comp, _ = power_spectrum(jnp.asarray(painted), box, k_edges=edges, compensate_cic=True)
    err_raw = np.abs(np.asarray(p_raw / p_true) - 1)
    err_comp = np.abs(np.asarray(p_comp / p_true) - 1)
    assert np.all(err_comp < 0.05)
    assert np.all(err_comp[-2:] < err_raw[-2:] / 3)  # at high k compensation clearly helps
    # Real-space compensation gives the same spectrum.
    _, p_comp2, _ = power_spectrum(compensate_cic(jnp.asarray(painted)), box, k_edges=edges)
    np.testing.assert_allclose(np.asarray(p_comp2), np.asarray(p_comp), rtol=1e-10)


# ---------------------------------------------------------------- (7) jit, vmap, dtypes


_STATIC = ("box_size", "n_bins", "compensate_cic")


@pytest.mark.parametrize(
    "fn", [cross_power_spectrum, correlation_coefficient, transfer_function]
)
def test_jit_and_vmap_pairs(fn):
    shape, box = (8, 8, 8), (40.0, 40.0, 40.0)
    a = jnp.asarray(np.stack([_gaussian_field(shape, box, _power_law, s) for s in (20, 21)]))
    b = a + 0.3 * jnp.asarray(np.stack([_gaussian_field(shape, box, _power_law, s) for s in (22, 23)]))
    eager = [fn(a[i], b[i], box) for i in range(2)]
    jitted = jax.jit(fn, static_argnames=_STATIC)(a[0], b[0], box)
    batched = jax.vmap(lambda x, y: fn(x, y, box))(a, b)
    for out_j, out_e in zip(jitted, eager[0]):
        np.testing.assert_allclose(np.asarray(out_j), np.asarray(out_e), rtol=1e-12)
    for i in range(2):
        for out_b, out_e in zip(batched, eager[i]):
            np.testing.assert_allclose(np.asarray(out_b[i]), np.asarray(out_e), rtol=1e-12)


def test_jit_vmap_power_with_traced_edges():
    shape, box = (8, 8, 8), (40.0, 40.0, 40.0)
    d = jnp.asarray(np.stack([_gaussian_field(shape, box, _power_law, s) for s in (30, 31, 32)]))
    edges = jnp.asarray([0.1, 0.2, 0.35, 0.6])
    eager = [power_spectrum(d[i], box, k_edges=edges, compensate_cic=True) for i in range(3)]
    jitted = jax.jit(power_spectrum, static_argnames=_STATIC)
    batched = jax.vmap(lambda x, e: jitted(x, box, k_edges=e, compensate_cic=True), in_axes=(0, None))(d, edges)
    for i in range(3):
        for out_b, out_e in zip(batched, eager[i]):
            np.testing.assert_allclose(np.asarray(out_b[i]), np.asarray(out_e), rtol=1e-12)


def test_grad_through_power():
    shape, box = (8, 8, 8), (40.0, 40.0, 40.0)
    d = jnp.asarray(_gaussian_field(shape, box, _power_law, 40))
    # d/dδ Σ_bins P·N_k = d/dδ V var(δ) (all modes binned) = 2 V (δ − mean δ) / N.
    edges = jnp.asarray([1e-3, 10.0])
    g = jax.grad(lambda x: jnp.sum(power_spectrum(x, box, k_edges=edges)[1]) * (d.size - 1))(d)
    np.testing.assert_allclose(np.asarray(g), 2 * np.prod(box) * np.asarray(d - jnp.mean(d)) / d.size, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtypes_survive(dtype):
    shape, box = (8, 8, 8), (40.0, 40.0, 40.0)
    a = jnp.asarray(_gaussian_field(shape, box, _power_law, 50), dtype)
    b = jnp.asarray(_gaussian_field(shape, box, _power_law, 51), dtype)
    for k, x, n in [
        power_spectrum(a, box),
        power_spectrum(a, box, compensate_cic=True, k_edges=jnp.asarray([0.1, 0.3, 0.5])),
        cross_power_spectrum(a, b, box),
        correlation_coefficient(a, b, box),
        transfer_function(a, b, box),
    ]:
        assert k.dtype == dtype and x.dtype == dtype and n.dtype == jnp.int32
    assert compensate_cic(a).dtype == dtype
    assert cic_window(shape, dtype).dtype == dtype
    # float32 agrees with float64 to single-precision round-off.
    p32 = power_spectrum(a.astype(jnp.float32), box)[1]
    p64 = power_spectrum(a.astype(jnp.float64), box)[1]
    np.testing.assert_allclose(np.asarray(p32), np.asarray(p64), rtol=1e-5)


# ---------------------------------------------------------------- jaxpm peer


def test_agrees_with_jaxpm():
    """jaxpm 0.1.6 `utils.power_spectrum` uses the same normalisation (ortho fftn × V/N).

    Differences, documented in docs/pipeline/nbody.md: it runs a full complex
    fftn (we use rfftn with half-space weights — same mode counts), bins with
    np.digitize on |k| without a tolerance (so modes lying exactly on an edge
    land by round-off; we compare with off-lattice edges here), its default
    edges are 2 k_f(shortest side) wide from 1.5 of that, and for a cross
    spectrum it returns |Σ δ_a δ_b*| per shell, which loses the sign of
    anti-correlated fields. It also fails under strict dtype promotion.
    """
    jaxpm_utils = pytest.importorskip("jaxpm.utils")
    shape, box = (16, 16, 32), (50.0, 50.0, 100.0)
    a = jnp.asarray(_gaussian_field(shape, box, _power_law, 60))
    b = -a + 0.5 * jnp.asarray(_gaussian_field(shape, box, _power_law, 61))
    k_f = 2 * np.pi / 100.0
    edges = (np.arange(1, 15) + 0.5) * k_f
    k, p, _ = power_spectrum(a, box, k_edges=jnp.asarray(edges))
    _, p_ab, _ = cross_power_spectrum(a, b, box, k_edges=jnp.asarray(edges))
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        k_pm, p_pm = jaxpm_utils.power_spectrum(a, box_shape=np.asarray(box), kedges=edges)
        _, p_ab_pm = jaxpm_utils.power_spectrum(a, b, box_shape=np.asarray(box), kedges=edges)
    np.testing.assert_allclose(np.asarray(k), k_pm, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(p), np.asarray(p_pm), rtol=1e-10)
    assert np.all(np.asarray(p_ab) < 0)  # anti-correlated
    np.testing.assert_allclose(np.abs(np.asarray(p_ab)), np.asarray(p_ab_pm), rtol=1e-10)
