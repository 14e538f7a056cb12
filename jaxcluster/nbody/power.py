r"""Binned power spectra of fields on a periodic mesh.

Conventions (ARCHITECTURE §2): a field lives on a mesh of shape
`(n_x, n_y, n_z)` covering a periodic box `box_size = (L_x, L_y, L_z)`
[h⁻¹ Mpc] with isotropic cells, $Δ = L_i / n_i$ the same on every axis
(rectangular boxes are allowed, anisotropic cells are not). Wavenumbers are
in h Mpc⁻¹, powers in h⁻³ Mpc³.

With $δ_{\mathbf k} = \sum_{\mathbf x} δ(\mathbf x)\, e^{-i\mathbf k\cdot\mathbf x}$
the unnormalised DFT, $V = L_x L_y L_z$ and $N = n_x n_y n_z$, the estimator is

$$\hat P(k) = \frac{V}{N^2}\,\frac{1}{N_k}\sum_{|\mathbf k| \in \text{bin}} |δ_{\mathbf k}|^2,$$

the average over the $N_k$ modes of the shell. Transforms are real
(`jnp.fft.rfftn`): the stored half-space $k_z \ge 0$ stands for the full one,
so a mode with $0 < k_z < k_{\mathrm{Ny}}$ counts twice (it and its conjugate),
and modes on the $k_z = 0$ and $k_z = k_{\mathrm{Ny}}$ planes count once (their
conjugates are stored too, or they are their own). The $\mathbf k = 0$ mode
is never binned. Bins are half-open, $k_{\mathrm{lo}} \le |\mathbf k| < k_{\mathrm{hi}}$;
a mode lying on an edge in exact arithmetic (common: the default edges are
multiples of the fundamental) goes to the upper shell, whatever the round-off
(|k| is compared with a relative tolerance of 16 ε of the dtype).

All functions are pure; the spectra are wrapped in `jax.jit` with
`box_size` (a hashable tuple), `n_bins` and `compensate_cic` static, and
`k_edges` may be a traced array (its length is static). Outputs keep the input's float dtype (float32 in, float32 out);
mode counts are int32.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Int

__all__ = [
    "power_spectrum",
    "cross_power_spectrum",
    "correlation_coefficient",
    "transfer_function",
    "cic_window",
    "compensate_cic",
    "default_k_edges",
]


# ------------------------------------------------------------ validation


def _check_box(mesh_shape: tuple[int, ...], box_size) -> tuple[float, float, float]:
    """Box size as three floats; raise ValueError naming `box_size` if invalid."""
    try:
        box = tuple(float(b) for b in box_size)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(
            f"box_size must be a static tuple of three floats [h⁻¹ Mpc], got {box_size!r}"
        ) from err
    if len(box) != 3 or not all(math.isfinite(b) and b > 0 for b in box):
        raise ValueError(f"box_size must be three positive lengths [h⁻¹ Mpc], got {box_size!r}")
    cells = [b / n for b, n in zip(box, mesh_shape)]
    if max(cells) - min(cells) > 1e-9 * max(cells):
        raise ValueError(
            f"box_size = {box} with mesh shape {mesh_shape} gives anisotropic cells "
            f"{tuple(cells)} h⁻¹ Mpc; cells must be cubic (L_i / n_i equal on every axis)"
        )
    return box


def _check_field(name: str, field) -> tuple[int, int, int]:
    if jnp.ndim(field) != 3:
        raise ValueError(
            f"{name} must be a 3-D field of shape (n_x, n_y, n_z), got shape {jnp.shape(field)}"
            " (batch with jax.vmap)"
        )
    if not jnp.issubdtype(jnp.result_type(field), jnp.floating):
        raise ValueError(f"{name} must be a real floating field, got dtype {jnp.result_type(field)}")
    return tuple(int(n) for n in jnp.shape(field))


# ------------------------------------------------------------ k grids


def _rfft_k(mesh_shape, box, dtype):
    """Wavevector components [h Mpc⁻¹] on the rfft layout, broadcastable to it."""
    nx, ny, nz = mesh_shape
    kx = 2 * np.pi * np.fft.fftfreq(nx, d=box[0] / nx)
    ky = 2 * np.pi * np.fft.fftfreq(ny, d=box[1] / ny)
    kz = 2 * np.pi * np.fft.rfftfreq(nz, d=box[2] / nz)
    return (
        jnp.asarray(kx.reshape(-1, 1, 1), dtype),
        jnp.asarray(ky.reshape(1, -1, 1), dtype),
        jnp.asarray(kz.reshape(1, 1, -1), dtype),
    )


def _half_space_weight(nz: int) -> np.ndarray:
    """Multiplicity of each stored k_z plane: 1 on k_z = 0 and Nyquist, else 2."""
    w = np.full(nz // 2 + 1, 2, dtype=np.int32)
    w[0] = 1
    if nz % 2 == 0:
        w[-1] = 1
    return w.reshape(1, 1, -1)


def default_k_edges(
    mesh_shape: tuple[int, int, int],
    box_size: tuple[float, ...],
    n_bins: int | None = None,
) -> Float[np.ndarray, " n_edges"]:
    r"""Default shell edges [h Mpc⁻¹] for a mesh and box.

    Linear from the fundamental frequency of the longest side,
    $k_f = 2π / \max_i L_i$, to the Nyquist frequency of the mesh,
    $k_{\mathrm{Ny}} = π / Δ$. With `n_bins=None` the width is $k_f$
    (so the edges are $k_f, 2k_f, \dots, \lfloor n_{\max}/2 \rfloor k_f$ and
    no shell is empty, since the longest axis has a mode every $k_f$);
    otherwise `n_bins` equal bins span $[k_f, k_{\mathrm{Ny}}]$.

    Args:
        mesh_shape: `(n_x, n_y, n_z)` cells.
        box_size: `(L_x, L_y, L_z)` [h⁻¹ Mpc], isotropic cells.
        n_bins: number of bins, or None for bins of width $k_f$.

    Returns:
        `(n_bins + 1,)` float64 edges [h Mpc⁻¹] (NumPy, a static constant).

    Raises:
        ValueError: if `box_size` gives anisotropic cells, or `n_bins < 1`,
            or the mesh is too small for one bin of width $k_f$.
    """
    mesh_shape = tuple(int(n) for n in mesh_shape)
    if len(mesh_shape) != 3:
        raise ValueError(f"mesh_shape must have three entries, got {mesh_shape}")
    box = _check_box(mesh_shape, box_size)
    i_long = int(np.argmax(box))
    k_f = 2 * np.pi / box[i_long]
    if n_bins is None:
        n_half = mesh_shape[i_long] // 2
        if n_half < 2:
            raise ValueError(f"mesh_shape {mesh_shape} is too small for a default bin of width k_f")
        return k_f * np.arange(1, n_half + 1, dtype=np.float64)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    k_ny = np.pi * mesh_shape[0] / box[0]
    return np.linspace(k_f, k_ny, int(n_bins) + 1)


def _edges(mesh_shape, box, k_edges, n_bins, dtype):
    if k_edges is not None and n_bins is not None:
        raise ValueError("give at most one of k_edges and n_bins")
    if k_edges is None:
        return jnp.asarray(default_k_edges(mesh_shape, box, n_bins), dtype)
    edges = jnp.asarray(k_edges)
    if edges.ndim != 1 or edges.shape[0] < 2:
        raise ValueError(f"k_edges must be a 1-D array of at least two edges, got shape {edges.shape}")
    return edges.astype(dtype)


# ------------------------------------------------------------ CIC window


def cic_window(
    mesh_shape: tuple[int, int, int], dtype: jnp.dtype | type | None = None
) -> Float[Array, "n_x n_y n_kz"]:
    r"""Fourier window of cloud-in-cell assignment on the rfft layout.

    $$W(\mathbf k) = \prod_{i} \operatorname{sinc}^2\!\left(\frac{k_i Δ}{2}\right),
    \qquad \operatorname{sinc} x = \frac{\sin x}{x},$$

    with $k_i Δ = 2π m_i / n_i$ for the DFT index $m_i$, so $W$ depends on the
    mesh shape only (not on the box size). $W = 1$ at $\mathbf k = 0$ and
    $W = (2/π)^2$ per axis at the Nyquist frequency.

    Args:
        mesh_shape: `(n_x, n_y, n_z)` cells.
        dtype: float dtype of the result; the default float dtype if None.

    Returns:
        `(n_x, n_y, n_z // 2 + 1)` window, dimensionless.
    """
    mesh_shape = tuple(int(n) for n in mesh_shape)
    if len(mesh_shape) != 3 or min(mesh_shape) < 1:
        raise ValueError(f"mesh_shape must be three positive ints, got {mesh_shape}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    nx, ny, nz = mesh_shape
    # k_i Δ / 2 = π m_i / n_i; np.sinc(x) = sin(πx)/(πx), so sinc(m/n) is what we need.
    wx = np.sinc(np.fft.fftfreq(nx)) ** 2
    wy = np.sinc(np.fft.fftfreq(ny)) ** 2
    wz = np.sinc(np.fft.rfftfreq(nz)) ** 2
    w = wx.reshape(-1, 1, 1) * wy.reshape(1, -1, 1) * wz.reshape(1, 1, -1)
    return jnp.asarray(w, dtype)


def compensate_cic(
    field: Float[ArrayLike, "n_x n_y n_z"] | Complex[ArrayLike, "n_x n_y n_kz"],
    mesh_shape: tuple[int, int, int] | None = None,
) -> Float[Array, "n_x n_y n_z"] | Complex[Array, "n_x n_y n_kz"]:
    r"""Deconvolve the CIC assignment window, $δ_{\mathbf k} \to δ_{\mathbf k} / W(\mathbf k)$.

    This is the standard compensation (Jing 2005, ApJ 620, 559, without the
    sum over aliased images): it divides the Fourier field by `cic_window`,
    so a power spectrum is divided by $W^2$. It corrects the smoothing of
    the assignment kernel, not aliasing, which remains at the per-cent level
    near the Nyquist frequency.

    Args:
        field: either a real-space field `(n_x, n_y, n_z)` (returned in real
            space, same shape and dtype), or its `jnp.fft.rfftn` transform
            `(n_x, n_y, n_z // 2 + 1)` (complex; returned in Fourier space).
        mesh_shape: the real-space mesh shape; required for a complex
            `field`, since `n_z` cannot be told from `n_z // 2 + 1`.

    Returns:
        The compensated field, in the space and dtype it came in.

    Raises:
        ValueError: if `field` is not 3-D, or `mesh_shape` is missing or does
            not match a complex `field`.
    """
    field = jnp.asarray(field)
    if field.ndim != 3:
        raise ValueError(f"field must be 3-D, got shape {field.shape}")
    if jnp.issubdtype(field.dtype, jnp.complexfloating):
        if mesh_shape is None:
            raise ValueError("mesh_shape is required when field is a complex rfft field")
        mesh_shape = tuple(int(n) for n in mesh_shape)
        expected = (mesh_shape[0], mesh_shape[1], mesh_shape[2] // 2 + 1)
        if field.shape != expected:
            raise ValueError(
                f"mesh_shape {mesh_shape} implies an rfft field of shape {expected}, got {field.shape}"
            )
        real_dtype = jnp.finfo(field.dtype).dtype
        return field / cic_window(mesh_shape, real_dtype).astype(field.dtype)
    if not jnp.issubdtype(field.dtype, jnp.floating):
        raise ValueError(f"field must be real floating or complex, got dtype {field.dtype}")
    if mesh_shape is not None and tuple(mesh_shape) != field.shape:
        raise ValueError(f"mesh_shape {tuple(mesh_shape)} does not match field shape {field.shape}")
    field_k = jnp.fft.rfftn(field)
    field_k = field_k / cic_window(field.shape, field.dtype).astype(field_k.dtype)
    return jnp.fft.irfftn(field_k, s=field.shape, axes=(0, 1, 2)).astype(field.dtype)


# ------------------------------------------------------------ binning


def _prepare(name, delta, box_size, compensate):
    """Validate, transform and (optionally) compensate one real field."""
    mesh_shape = _check_field(name, delta)
    box = _check_box(mesh_shape, box_size)
    delta = jnp.asarray(delta)
    delta_k = jnp.fft.rfftn(delta)
    if compensate:
        delta_k = delta_k / cic_window(mesh_shape, delta.dtype).astype(delta_k.dtype)
    return mesh_shape, box, delta_k


def _bin(grids, mesh_shape, box, k_edges, n_bins, dtype):
    """Mode-weighted shell averages of each real `grid` (rfft layout).

    Returns (k_mean, [averages], n_modes); empty shells give NaN averages.
    """
    edges = _edges(mesh_shape, box, k_edges, n_bins, dtype)
    n_shells = edges.shape[0] - 1
    kx, ky, kz = _rfft_k(mesh_shape, box, dtype)
    kmag = jnp.sqrt(kx**2 + ky**2 + kz**2)
    # digitize: index i means edges[i-1] <= |k| < edges[i]; 0 and n_edges are out of range.
    # Lattice modes often lie exactly on an edge (default edges are multiples of
    # k_f); a relative nudge of 16 ε sends them to the upper shell whatever the
    # round-off in |k| or in the edges.
    nudge = jnp.asarray(1.0 + 16.0 * float(jnp.finfo(dtype).eps), dtype)
    idx = jnp.digitize(kmag * nudge, edges)
    idx = jnp.where(kmag == 0, 0, idx).reshape(-1)  # never bin k = 0
    w_int = jnp.broadcast_to(jnp.asarray(_half_space_weight(mesh_shape[2])), kmag.shape)
    w = w_int.astype(dtype)

    def shell_sum(x):
        s = jax.ops.segment_sum((w * x).reshape(-1), idx, num_segments=n_shells + 2)
        return s[1 : n_shells + 1]

    n_modes = jax.ops.segment_sum(w_int.reshape(-1), idx, num_segments=n_shells + 2)[1 : n_shells + 1]
    count = shell_sum(jnp.ones_like(kmag))
    safe = jnp.where(count > 0, count, jnp.ones_like(count))
    nan = jnp.full_like(count, jnp.nan)

    def mean(x):
        return jnp.where(count > 0, shell_sum(x) / safe, nan)

    return mean(kmag), [mean(g) for g in grids], n_modes


def _norm(mesh_shape, box, dtype):
    """V / N² [h⁻³ Mpc³], the power normalisation of an unnormalised DFT."""
    n = mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
    return jnp.asarray(box[0] * box[1] * box[2] / float(n) ** 2, dtype)


# ------------------------------------------------------------ public spectra

# Compiled once per (mesh shape, dtype, box, binning): eager calls then cost one
# dispatch, and an outer jit/vmap simply inlines them.
_STATIC_ARGNAMES = ("box_size", "n_bins", "compensate_cic")


@partial(jax.jit, static_argnames=_STATIC_ARGNAMES)
def power_spectrum(
    delta: Float[ArrayLike, "n_x n_y n_z"],
    box_size: tuple[float, ...],
    k_edges: Float[ArrayLike, " n_edges"] | None = None,
    n_bins: int | None = None,
    compensate_cic: bool = False,
) -> tuple[Float[Array, " n_bins"], Float[Array, " n_bins"], Int[Array, " n_bins"]]:
    r"""Auto power spectrum of an overdensity field, averaged in shells of |k|.

    $\hat P(k) = \frac{V}{N^2} \langle |δ_{\mathbf k}|^2 \rangle_{\text{shell}}$
    (see the module docstring for the mode weighting of the rfft half-space).

    Args:
        delta: `(n_x, n_y, n_z)` overdensity δ (dimensionless); batch with
            `jax.vmap`.
        box_size: `(L_x, L_y, L_z)` [h⁻¹ Mpc], static; cells must be cubic.
        k_edges: `(n_bins + 1,)` increasing shell edges [h Mpc⁻¹], bins
            half-open `[lo, hi)`. Default `default_k_edges`: linear from the
            fundamental of the longest side to the mesh Nyquist frequency, of
            width that fundamental.
        n_bins: instead of `k_edges`, this many equal bins from the
            fundamental of the longest side to the Nyquist frequency (static).
        compensate_cic: divide $δ_{\mathbf k}$ by the CIC window
            (`compensate_cic`) before squaring.

    Returns:
        `(k, P, n_modes)`, each `(n_bins,)`: the mode-weighted mean |k| of
        each shell [h Mpc⁻¹], the power [h⁻³ Mpc³] (NaN in an empty shell),
        and the number of full-space modes in it (int32, conjugates counted).

    Raises:
        ValueError: if `delta` is not a real 3-D field, `box_size` is not
            three positive lengths with cubic cells, or both `k_edges` and
            `n_bins` are given.
    """
    mesh_shape, box, delta_k = _prepare("delta", delta, box_size, compensate_cic)
    dtype = jnp.asarray(delta).dtype
    power = jnp.real(delta_k) ** 2 + jnp.imag(delta_k) ** 2
    k, (p,), n_modes = _bin([power], mesh_shape, box, k_edges, n_bins, dtype)
    return k, p * _norm(mesh_shape, box, dtype), n_modes


def _cross_parts(delta_a, delta_b, box_size, k_edges, n_bins, compensate_cic):
    mesh_a, box, a_k = _prepare("delta_a", delta_a, box_size, compensate_cic)
    mesh_b, _, b_k = _prepare("delta_b", delta_b, box_size, compensate_cic)
    if mesh_a != mesh_b:
        raise ValueError(f"delta_a shape {mesh_a} and delta_b shape {mesh_b} must match")
    dtype_a, dtype_b = jnp.asarray(delta_a).dtype, jnp.asarray(delta_b).dtype
    if dtype_a != dtype_b:
        raise ValueError(f"delta_a dtype {dtype_a} and delta_b dtype {dtype_b} must match")
    p_a = jnp.real(a_k) ** 2 + jnp.imag(a_k) ** 2
    p_b = jnp.real(b_k) ** 2 + jnp.imag(b_k) ** 2
    p_ab = jnp.real(a_k) * jnp.real(b_k) + jnp.imag(a_k) * jnp.imag(b_k)  # Re(a b*)
    k, (pa, pb, pab), n_modes = _bin([p_a, p_b, p_ab], mesh_a, box, k_edges, n_bins, dtype_a)
    norm = _norm(mesh_a, box, dtype_a)
    return k, pa * norm, pb * norm, pab * norm, n_modes


@partial(jax.jit, static_argnames=_STATIC_ARGNAMES)
def cross_power_spectrum(
    delta_a: Float[ArrayLike, "n_x n_y n_z"],
    delta_b: Float[ArrayLike, "n_x n_y n_z"],
    box_size: tuple[float, ...],
    k_edges: Float[ArrayLike, " n_edges"] | None = None,
    n_bins: int | None = None,
    compensate_cic: bool = False,
) -> tuple[Float[Array, " n_bins"], Float[Array, " n_bins"], Int[Array, " n_bins"]]:
    r"""Cross power spectrum $P_{ab}(k) = \frac{V}{N^2}\langle \mathrm{Re}\, δ_{a,\mathbf k} δ^*_{b,\mathbf k}\rangle$.

    The real part, so $P_{ab}$ is negative for anti-correlated fields
    (jaxpm 0.1.6 returns the modulus of the shell sum instead, which is
    never negative).

    Args:
        delta_a: `(n_x, n_y, n_z)` first overdensity field.
        delta_b: `(n_x, n_y, n_z)` second field, same shape and dtype.
        box_size: `(L_x, L_y, L_z)` [h⁻¹ Mpc], static; cells must be cubic.
        k_edges: shell edges [h Mpc⁻¹], as in `power_spectrum`.
        n_bins: number of default-range bins, as in `power_spectrum`.
        compensate_cic: deconvolve the CIC window from both fields.

    Returns:
        `(k, P_ab, n_modes)`, each `(n_bins,)`: mean |k| [h Mpc⁻¹], cross
        power [h⁻³ Mpc³], full-space mode count (int32).

    Raises:
        ValueError: as `power_spectrum`, or if the fields' shapes or dtypes differ.
    """
    k, _, _, p_ab, n_modes = _cross_parts(delta_a, delta_b, box_size, k_edges, n_bins, compensate_cic)
    return k, p_ab, n_modes


@partial(jax.jit, static_argnames=_STATIC_ARGNAMES)
def correlation_coefficient(
    delta_a: Float[ArrayLike, "n_x n_y n_z"],
    delta_b: Float[ArrayLike, "n_x n_y n_z"],
    box_size: tuple[float, ...],
    k_edges: Float[ArrayLike, " n_edges"] | None = None,
    n_bins: int | None = None,
    compensate_cic: bool = False,
) -> tuple[Float[Array, " n_bins"], Float[Array, " n_bins"], Int[Array, " n_bins"]]:
    r"""Cross-correlation coefficient $r(k) = P_{ab} / \sqrt{P_a P_b}$, in $[-1, 1]$.

    Args:
        delta_a: `(n_x, n_y, n_z)` first overdensity field.
        delta_b: `(n_x, n_y, n_z)` second field, same shape and dtype.
        box_size: `(L_x, L_y, L_z)` [h⁻¹ Mpc], static; cells must be cubic.
        k_edges: shell edges [h Mpc⁻¹], as in `power_spectrum`.
        n_bins: number of default-range bins, as in `power_spectrum`.
        compensate_cic: deconvolve the CIC window from both fields (it
            cancels in r unless the fields differ in their assignment).

    Returns:
        `(k, r, n_modes)`, each `(n_bins,)`: mean |k| [h Mpc⁻¹], r
        (dimensionless; NaN where a shell is empty or a field has no power),
        full-space mode count (int32).

    Raises:
        ValueError: as `cross_power_spectrum`.
    """
    k, p_a, p_b, p_ab, n_modes = _cross_parts(delta_a, delta_b, box_size, k_edges, n_bins, compensate_cic)
    return k, p_ab / jnp.sqrt(p_a * p_b), n_modes


@partial(jax.jit, static_argnames=_STATIC_ARGNAMES)
def transfer_function(
    delta_a: Float[ArrayLike, "n_x n_y n_z"],
    delta_b: Float[ArrayLike, "n_x n_y n_z"],
    box_size: tuple[float, ...],
    k_edges: Float[ArrayLike, " n_edges"] | None = None,
    n_bins: int | None = None,
    compensate_cic: bool = False,
) -> tuple[Float[Array, " n_bins"], Float[Array, " n_bins"], Int[Array, " n_bins"]]:
    r"""Transfer function $T(k) = \sqrt{P_b / P_a}$ from field a to field b.

    Args:
        delta_a: `(n_x, n_y, n_z)` reference field (e.g. the linear field).
        delta_b: `(n_x, n_y, n_z)` field compared with it, same shape and dtype.
        box_size: `(L_x, L_y, L_z)` [h⁻¹ Mpc], static; cells must be cubic.
        k_edges: shell edges [h Mpc⁻¹], as in `power_spectrum`.
        n_bins: number of default-range bins, as in `power_spectrum`.
        compensate_cic: deconvolve the CIC window from both fields.

    Returns:
        `(k, T, n_modes)`, each `(n_bins,)`: mean |k| [h Mpc⁻¹], T
        (dimensionless), full-space mode count (int32).

    Raises:
        ValueError: as `cross_power_spectrum`.
    """
    k, p_a, p_b, _, n_modes = _cross_parts(delta_a, delta_b, box_size, k_edges, n_bins, compensate_cic)
    return k, jnp.sqrt(p_b / p_a), n_modes
