r"""Lagrangian Deep Learning (LDL; Dai & Seljak 2021) layers as Equinox modules.

LDL maps dark-matter particles to a baryonic field on a mesh with two kinds of
learnable layers (seed 001 §2.2.1):

* a **displacement layer** moves the particles along a modified potential,
  $$f = (1+δ)^γ, \qquad d\mathbf x = α ∇ \mathcal F^{-1}\big(\hat O(k) \hat f(\mathbf k)\big),$$
  with 1 + δ the CIC-painted density of the *current* particles (eqs. 1, 3);
* an **activation layer** turns the painted density of the displaced
  particles into the output field, $F = \mathrm{ReLU}(b_1 (1+δ)^μ - b_0)$ (eq. 4).

`LDL` chains `n_displacements` (default 2, as seed 001) displacement layers
and one activation. Two radial Fourier filters $\hat O(k)$ are provided:
`BSplineFilter` ($\hat O = 1 + \mathcal S(Ξ, k)$, seed 001 eq. 2, after
Lanzieri et al. 2022; **the default**) and `ParametricFilter` (Dai & Seljak's
$\hat O_G = -e^{-k^2/k_l^2} e^{-k_h^2/k^2} k^n$).

Units and conventions: positions are comoving [h⁻¹ Mpc], periodic in a box of
`box_size` [h⁻¹ Mpc] painted on `mesh_shape` cells; wavenumbers k are
[h Mpc⁻¹]; ∇ is with respect to h⁻¹ Mpc, so α has units
[h⁻¹ Mpc]² / [Ô] (for the B-spline filter, Ô is dimensionless). 1 + δ is the
CIC density in units of the mean particle density, so its mesh mean is 1 up to
round-off. Where a power of 1 + δ is taken, 1 + δ is floored at `DENSITY_FLOOR`
so that empty cells give finite gradients.

References:
    Dai B., Seljak U. (2021), PNAS 118, e2020324118, arXiv:2010.02926.
    Lanzieri D., Lanusse F., Starck J.-L. (2022), arXiv:2207.05509.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..nbody.mesh import FullMesh, MeshOps, gradient_kernel, paint_cic

__all__ = [
    "DENSITY_FLOOR",
    "DEFAULT_K_MAX",
    "GRADIENTS",
    "bspline_basis",
    "clamped_knots",
    "paint_one_plus_delta",
    "AbstractRadialFilter",
    "BSplineFilter",
    "ParametricFilter",
    "DisplacementLayer",
    "ActivationLayer",
    "LDL",
]

GRADIENTS = ("exact", "fd4")
"""The displacement layer's gradient operators (`DisplacementLayer`)."""

DENSITY_FLOOR = 1e-10
"""Floor on 1 + δ before a power is taken (empty cells): keeps (1+δ)^γ and its gradients finite."""

DEFAULT_K_MAX = math.pi / 0.39
"""Default B-spline range [h Mpc⁻¹]: the Nyquist wavenumber of 0.39 h⁻¹ Mpc cells (seed 001's mesh)."""


# ------------------------------------------------------------------ geometry


def _grid(box_size, mesh_shape) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Normalise `box_size` (scalar or 3) and `mesh_shape` (3 ints) to Python tuples (static)."""
    box = tuple(float(b) for b in np.broadcast_to(np.asarray(box_size, dtype=float), (3,)))
    shape = tuple(int(n) for n in np.broadcast_to(np.asarray(mesh_shape), (3,)))
    if not all(b > 0 for b in box):
        raise ValueError(f"box_size must be > 0 h⁻¹ Mpc, got {box_size}")
    if not all(n >= 2 for n in shape):
        raise ValueError(f"mesh_shape must have every entry >= 2, got {mesh_shape}")
    return box, shape


def _check_pos(pos):
    if pos.ndim != 2 or pos.shape[-1] != 3:
        raise ValueError(f"pos must have shape (n_ptcl, 3) [h⁻¹ Mpc], got {pos.shape}")


def _cell(box, shape, dtype) -> Float[Array, "3"]:
    return jnp.asarray([b / n for b, n in zip(box, shape)], dtype=dtype)


def paint_one_plus_delta(
    pos: Float[Array, "n_ptcl 3"],
    box_size: float | tuple[float, float, float],
    mesh_shape: tuple[int, int, int],
    mesh_ops: MeshOps | None = None,
) -> Float[Array, "nx ny nz"]:
    r"""CIC density of the particles in units of the mean, $1 + δ$ (mesh mean 1 up to round-off).

    Every particle carries the same mass; the painted counts are multiplied by
    $n_\mathrm{cells} / n_\mathrm{ptcl}$ (not 2 + δ, not counts).

    Args:
        pos: (n_ptcl, 3) comoving positions [h⁻¹ Mpc]; periodic, need not be wrapped.
        box_size: box side(s) [h⁻¹ Mpc] (static).
        mesh_shape: (nx, ny, nz) (static).
        mesh_ops: None (the whole mesh here) or a `nbody.domain.SlabMesh` inside
            `shard_map` (this device's slab of 1 + δ, normalised by all particles).

    Returns:
        (nx, ny, nz) 1 + δ, dimensionless, ≥ 0.
    """
    _check_pos(pos)
    box, shape = _grid(box_size, mesh_shape)
    pos_cell = pos / _cell(box, shape, pos.dtype)[None, :]
    if mesh_ops is not None:
        return _one_plus_delta(pos_cell, shape, mesh_ops)
    counts = paint_cic(pos_cell, jnp.ones(pos.shape[:1], dtype=pos.dtype), shape)
    return counts * (math.prod(shape) / pos.shape[0])


def _one_plus_delta(pos_cell, shape, ops, stride: int = 1):
    """`paint_one_plus_delta` of every `stride`-th particle, through the mesh operations `ops` (positions in cells)."""
    pos_src, mass, n_src = ops.subsample(pos_cell, stride) if stride > 1 else (pos_cell, None, None)
    if mass is None:
        mass = jnp.ones_like(pos_cell[:, 0])
        n_src = pos_cell.shape[0] * (1 if ops.is_full else ops.n_dev)
    return ops.paint(pos_src, mass) * (math.prod(shape) / n_src)


# ------------------------------------------------------------------ B-splines


def clamped_knots(k_max: float, n_interior: int, degree: int = 3) -> np.ndarray:
    """Clamped, uniform knot vector on [0, k_max]: `degree + 1` knots at each end, `n_interior` equispaced inside.

    Returns a float64 numpy array of `n_interior + 2 (degree + 1)` knots; the
    spline space has `n_interior + degree + 1` basis functions.
    """
    if not k_max > 0:
        raise ValueError(f"k_max = {k_max} must be > 0 h Mpc⁻¹")
    if n_interior < 0 or degree < 0:
        raise ValueError(f"need n_interior >= 0 and degree >= 0, got {n_interior}, {degree}")
    inner = np.linspace(0.0, k_max, n_interior + 2)
    return np.concatenate([np.zeros(degree), inner, np.full(degree, k_max)])


def _const(c, x):
    """A numpy constant vector as an array of x's dtype, broadcastable against x[..., None]."""
    return jnp.asarray(c, dtype=x.dtype).reshape((1,) * x.ndim + (-1,))


def bspline_basis(x: Float[Array, "*x"], knots: Float[ArrayLike, " n_knots"], degree: int = 3) -> Float[Array, "*x n_basis"]:
    r"""All B-spline basis functions $B_{j,p}(x)$ by the Cox–de Boor recursion.

    $B_{j,0} = 1$ on $[t_j, t_{j+1})$ (the last non-empty interval is closed so
    that x = t_max is covered), and
    $B_{j,p} = \frac{x - t_j}{t_{j+p} - t_j} B_{j,p-1} + \frac{t_{j+p+1} - x}{t_{j+p+1} - t_{j+1}} B_{j+1,p-1}$,
    a term with a zero denominator (repeated knots) being 0. x is clipped to
    $[t_0, t_\mathrm{last}]$, so outside the knots the spline is continued as a constant.

    Args:
        x: points, any shape.
        knots: non-decreasing knot vector (fixed numbers, e.g. `clamped_knots`).
        degree: polynomial degree p (static).

    Returns:
        (*x.shape, n_knots − degree − 1) basis values; on [t_p, t_{n−p−1}] they are ≥ 0 and sum to 1.
    """
    t = np.asarray(knots, dtype=float)
    if t.ndim != 1 or t.size < degree + 2 or np.any(np.diff(t) < 0):
        raise ValueError(f"knots must be a non-decreasing vector of at least degree + 2 = {degree + 2} values")
    m = t.size
    x = jnp.clip(x, float(t[0]), float(t[-1]))
    xe = x[..., None]
    last = int(np.nonzero(t[1:] > t[:-1])[0].max())
    closed = np.arange(m - 1) == last
    inside = (xe >= _const(t[:-1], x)) & (xe < _const(t[1:], x))
    B = inside | ((_const(closed, x) > 0) & (xe == _const(t[1:], x)))
    B = B.astype(x.dtype)
    for p in range(1, degree + 1):
        n = m - 1 - p
        den_l = t[p : p + n] - t[:n]
        den_r = t[p + 1 : p + 1 + n] - t[1 : 1 + n]
        inv_l = np.where(den_l > 0, 1.0 / np.where(den_l > 0, den_l, 1.0), 0.0)
        inv_r = np.where(den_r > 0, 1.0 / np.where(den_r > 0, den_r, 1.0), 0.0)
        left = (xe - _const(t[:n], x)) * _const(inv_l, x) * B[..., :n]
        right = (_const(t[p + 1 : p + 1 + n], x) - xe) * _const(inv_r, x) * B[..., 1 : n + 1]
        B = left + right
    return B


# ------------------------------------------------------------------ filters


class AbstractRadialFilter(eqx.Module):
    """A radial Fourier operator Ô(k): k = |k| [h Mpc⁻¹] → Ô(k), shape-preserving, finite at k = 0."""

    def __call__(self, k: Float[Array, "*k"]) -> Float[Array, "*k"]:
        raise NotImplementedError


class BSplineFilter(AbstractRadialFilter):
    r"""$\hat O(k) = [1 + \mathcal S(Ξ, k)]/k^2$: seed 001's eq. 2 spline on the inverse Laplacian.

    Seed 001 writes the operator as $1 + \mathcal S(Ξ, k)$ and says the
    particles follow a *modified potential*; as in Lanzieri et al. (2022),
    whose B-spline correction it follows, the spline here multiplies the
    Green's function $1/k^2$, so $\mathcal F^{-1}(\hat O \hat f)$ is the
    potential of the source f (up to sign) and α > 0 moves particles towards
    overdensities, dimensionless. Without the 1/k², $α∇f$ follows the density
    gradient itself, which in cluster cores (1 + δ ~ 10³ per 0.39 h⁻¹ Mpc)
    throws particles across the box: trained that way on the synthetic sets
    the n_e field decorrelated from the truth (log correlation 0.02–0.06).

    Knots are fixed (`clamped_knots(k_max, n_interior)`): clamped, uniform on
    [0, k_max], by default k_max = π / 0.39 h Mpc⁻¹ (the Nyquist wavenumber of
    0.39 h⁻¹ Mpc cells) and 8 interior knots, hence 12 coefficients Ξ. Above
    k_max (the corners of a mesh's Fourier cube reach √3 k_Nyq) the spline is
    continued by its value at k_max. Ξ = 0 (the default) gives Ô = 1/k²; Ô(0) = 0.

    This is the default filter of `LDL.init` (as in seed 001).

    Attributes:
        coeffs: (n_interior + 4,) learnable coefficients Ξ (dimensionless).
        k_max: end of the knot range [h Mpc⁻¹] (static).
        n_interior: number of interior knots (static).
    """

    coeffs: Float[Array, " n_basis"]
    k_max: float = eqx.field(static=True)
    n_interior: int = eqx.field(static=True)

    def __init__(self, coeffs: Float[ArrayLike, " n_basis"] | None = None, k_max: float = DEFAULT_K_MAX, n_interior: int = 8):
        self.k_max = float(k_max)
        self.n_interior = int(n_interior)
        n_basis = self.n_interior + 4
        if coeffs is None:
            coeffs = jnp.zeros(n_basis, dtype=jnp.result_type(float))
        self.coeffs = jnp.asarray(coeffs)

    def __check_init__(self):
        if not self.k_max > 0:
            raise ValueError(f"k_max = {self.k_max} must be > 0 h Mpc⁻¹")
        if self.coeffs.shape != (self.n_interior + 4,):
            raise ValueError(f"coeffs must have shape (n_interior + 4,) = ({self.n_interior + 4},), got {self.coeffs.shape}")

    @property
    def knots(self) -> np.ndarray:
        """The fixed knot vector [h Mpc⁻¹] (numpy, float64)."""
        return clamped_knots(self.k_max, self.n_interior, 3)

    def __call__(self, k: Float[Array, "*k"]) -> Float[Array, "*k"]:
        basis = bspline_basis(k, self.knots, 3)
        modulation = 1.0 + basis @ self.coeffs.astype(k.dtype)
        # The spline modulates the inverse Laplacian, so F⁻¹(Ô f̂) is a potential
        # (seed 001: particles move "following a modified potential"); k = 0 has none.
        safe = jnp.where(k > 0, k, 1.0)
        return jnp.where(k > 0, modulation / safe**2, 0.0)


class ParametricFilter(AbstractRadialFilter):
    r"""Dai & Seljak (2021): $\hat O_G(k) = -\exp(-k^2/k_l^2)\,\exp(-k_h^2/k^2)\,k^n$.

    $k_l, k_h > 0$ [h Mpc⁻¹] are stored as their logs; n is real. At k = 0 the
    filter is set to its limit 0 (the $e^{-k_h^2/k^2}$ factor wins over any
    power); gradients there are exactly 0, never NaN.

    Attributes:
        log_k_l: ln(k_l / h Mpc⁻¹), the high-k (smoothing) cut.
        log_k_h: ln(k_h / h Mpc⁻¹), the low-k cut.
        n: power-law index.
    """

    log_k_l: Float[Array, ""]
    log_k_h: Float[Array, ""]
    n: Float[Array, ""]

    def __init__(self, k_l: Float[ArrayLike, ""] = 4.0, k_h: Float[ArrayLike, ""] = 0.05, n: Float[ArrayLike, ""] = 0.0):
        dtype = jnp.result_type(float)
        self.log_k_l = jnp.log(jnp.asarray(k_l, dtype=dtype))
        self.log_k_h = jnp.log(jnp.asarray(k_h, dtype=dtype))
        self.n = jnp.asarray(n, dtype=dtype)

    @property
    def k_l(self) -> Float[Array, ""]:
        return jnp.exp(self.log_k_l)

    @property
    def k_h(self) -> Float[Array, ""]:
        return jnp.exp(self.log_k_h)

    def __call__(self, k: Float[Array, "*k"]) -> Float[Array, "*k"]:
        dtype = k.dtype
        positive = k > 0
        ks = jnp.where(positive, k, 1.0)  # double where: no NaN gradient at k = 0
        k_l = jnp.exp(self.log_k_l.astype(dtype))
        k_h = jnp.exp(self.log_k_h.astype(dtype))
        value = -jnp.exp(-((ks / k_l) ** 2) - (k_h / ks) ** 2) * ks ** self.n.astype(dtype)
        return jnp.where(positive, value, 0.0)


# ------------------------------------------------------------------ layers


def _pow_floor(one_plus_delta, exponent):
    return jnp.maximum(one_plus_delta, DENSITY_FLOOR) ** exponent.astype(one_plus_delta.dtype)


def _radial_operator(filter, shape, cells, dtype) -> Float[Array, "nx ny nzr"]:
    """Ô(|k|) on the rfft grid.

    On a cubic mesh |k|² is the fundamental mode squared times an integer
    i_x² + i_y² + i_z² ≤ 3 (n/2)², so Ô is evaluated on those few thousand
    radii and gathered: the same values (up to the rounding of one square
    root), at a small fraction of the cost of evaluating the B-spline basis
    at every one of the n²(n/2 + 1) modes. Other meshes (the survey's
    padded boxes, e.g. 17 × 17 × 130) evaluate Ô on the distinct |k| of the
    grid, computed with numpy at trace time (mirror modes ±k share one), and
    gather: 2,821 radii instead of 19,074 modes there, in the forward pass and in
    the coefficient gradient alike.
    """
    if len(set(shape)) == 1:
        n = shape[0]
        i = jnp.fft.fftfreq(n, 1.0 / n).astype(jnp.int32)
        iz = jnp.fft.rfftfreq(n, 1.0 / n).astype(jnp.int32)
        n2 = i[:, None, None] ** 2 + i[None, :, None] ** 2 + iz[None, None, :] ** 2
        k_table = (2.0 * math.pi / (n * cells[0])) * jnp.sqrt(jnp.arange(3 * (n // 2) ** 2 + 1, dtype=dtype))
        return filter(k_table)[n2]
    nx, ny, nz = shape  # rfft_wavevectors' numbers, in numpy: static, so the unique radii are found at trace time
    kvec = (2 * np.pi * np.fft.fftfreq(nx)[:, None, None], 2 * np.pi * np.fft.fftfreq(ny)[None, :, None],
            2 * np.pi * np.fft.rfftfreq(nz)[None, None, :])
    k2 = sum((ki / c) ** 2 for ki, c in zip(kvec, cells))
    k2_table, index = np.unique(k2, return_inverse=True)
    return filter(jnp.sqrt(jnp.asarray(k2_table, dtype=dtype)))[index.reshape(k2.shape)]


class DisplacementLayer(eqx.Module):
    r"""One LDL displacement: $d\mathbf x = α ∇ \mathcal F^{-1}(\hat O(k) \hat f)$, $f = (1+δ)^γ$ (seed 001 eqs. 1, 3).

    1 + δ is painted from the current particles (`paint_one_plus_delta`, mean 1)
    and floored at `DENSITY_FLOOR`; ∇ is taken in Fourier space as $i\mathbf k$
    [h Mpc⁻¹] (`gradient="exact"`, zero on each axis's Nyquist plane, where
    $i k$ would break Hermitian symmetry) or as the 4-point finite difference
    of the potential $φ = \mathcal F^{-1}(\hat O \hat f)$ in real space
    (`"fd4"`, like the PM force: one inverse FFT instead of three; on a
    50 h⁻¹ Mpc PM box at 128³ its displacements correlate with the exact
    ones at 0.998); the k = 0 mode has no gradient. The three displacement
    components are read back at the particles with CIC.

    **Source sub-sampling** (`source_stride` s > 1): 1 + δ of the source is
    painted from every s-th particle (`pos[::s]`, normalised to mean 1), the
    displacement still applied to all. Painting is the costly step of a layer
    (a scatter); the source enters through a potential, Ô/k², so its shot
    noise is suppressed on the scales the displacement reads (on that PM box,
    s = 7 gives displacements correlated at 1.000 with s = 1, rms within
    0.2 %; `benchmarks/eldl.py` times it). Take s odd: for
    particles stored in lattice order on a power-of-two lattice an odd
    stride picks a uniform sheared sub-lattice of 1/s of them, an even one
    whole planes.

    Attributes:
        gamma: source exponent γ (eq. 1).
        alpha: amplitude α [h⁻¹ Mpc]² / [Ô] (eq. 3).
        filter: the radial operator Ô(k).
        gradient: "exact" (default) or "fd4" (static).
        source_stride: paint the source from every `source_stride`-th particle (static, ≥ 1; default 1: all).
    """

    gamma: Float[Array, ""]
    alpha: Float[Array, ""]
    filter: AbstractRadialFilter
    gradient: str = eqx.field(static=True)
    source_stride: int = eqx.field(static=True)

    def __init__(
        self,
        gamma: Float[ArrayLike, ""] = 1.0,
        alpha: Float[ArrayLike, ""] = 0.0,
        filter: AbstractRadialFilter | None = None,
        gradient: str = "exact",
        source_stride: int = 1,
    ):
        dtype = jnp.result_type(float)
        self.gamma = jnp.asarray(gamma, dtype=dtype)
        self.alpha = jnp.asarray(alpha, dtype=dtype)
        self.filter = BSplineFilter() if filter is None else filter
        self.gradient = gradient
        self.source_stride = source_stride

    def __check_init__(self):
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")
        if not isinstance(self.source_stride, int) or self.source_stride < 1:
            raise ValueError(f"source_stride must be an integer >= 1, got {self.source_stride!r}")

    def displacement(
        self,
        pos: Float[Array, "n_ptcl 3"],
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> Float[Array, "n_ptcl 3"]:
        """The displacement dx [h⁻¹ Mpc] of each particle (`__call__` returns pos + dx).

        `mesh_ops`: how to paint, transform and read (`nbody.mesh.FullMesh(mesh_shape)`, the default, or one
        device's slab of a decomposed box, `nbody.domain.SlabMesh`, inside `shard_map`).
        """
        _check_pos(pos)
        box, shape = _grid(box_size, mesh_shape)
        ops = FullMesh(shape) if mesh_ops is None else mesh_ops
        dtype = pos.dtype
        cell = _cell(box, shape, dtype)
        pos_cell = pos / cell[None, :]
        source = _pow_floor(_one_plus_delta(pos_cell, shape, ops, self.source_stride), self.gamma)
        source_k = ops.rfftn(source)
        kvec = ops.wavevectors(dtype)  # rad per cell
        cells = [b / n for b, n in zip(box, shape)]
        if ops.is_full:
            radial = _radial_operator(self.filter, shape, cells, dtype)
        else:  # a block of the transposed spectrum: Ô at each of its modes
            radial = self.filter(jnp.sqrt(sum((ki / c) ** 2 for ki, c in zip(kvec, cells))))
        phi_k = radial.astype(source_k.dtype) * source_k
        if self.gradient == "fd4":  # the stencil on φ: one inverse FFT instead of three (as a PM force)
            grad_cells = ops.read_gradient(ops.irfftn(phi_k), pos_cell)
            return self.alpha.astype(dtype) * grad_cells / cell[None, :]
        i_unit = jnp.asarray(1j, dtype=source_k.dtype)
        comps = [
            ops.irfftn(i_unit * (gradient_kernel(ki, self.gradient) / c).astype(source_k.dtype) * phi_k)
            for ki, c in zip(kvec, cells)
        ]
        grad_mesh = jnp.stack(comps, axis=-1)
        return self.alpha.astype(dtype) * ops.read(grad_mesh, pos_cell)

    def __call__(
        self,
        pos: Float[Array, "n_ptcl 3"],
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> Float[Array, "n_ptcl 3"]:
        """Displace the particles.

        Args:
            pos: (n_ptcl, 3) comoving positions [h⁻¹ Mpc], periodic.
            box_size: box side(s) [h⁻¹ Mpc] (static).
            mesh_shape: (nx, ny, nz) of the mesh the density is painted on (static).
            mesh_ops: mesh operations (`displacement`); default the whole mesh on this device.

        Returns:
            (n_ptcl, 3) pos + dx [h⁻¹ Mpc], not wrapped into the box.
        """
        return pos + self.displacement(pos, box_size, mesh_shape, mesh_ops)


def _inverse_softplus(y):
    return y + jnp.log(-jnp.expm1(-y))


class ActivationLayer(eqx.Module):
    r"""$F = \mathrm{ReLU}(b_1 (1+δ)^μ - b_0)$ on the mesh (seed 001 eq. 4).

    Parametrisation: $b_1 = \mathrm{softplus}(\tilde b_1) > 0$ with the raw
    $\tilde b_1$ stored (`b1_raw`, the trained leaf); b0 and μ are stored as
    is. The constructor takes b1 itself. 1 + δ is floored at `DENSITY_FLOOR`.

    Attributes:
        b0: offset (units of the output field).
        b1_raw: $\tilde b_1$, with $b_1 = \log(1 + e^{\tilde b_1})$ (units of the output field).
        mu: exponent μ.
    """

    b0: Float[Array, ""]
    b1_raw: Float[Array, ""]
    mu: Float[Array, ""]

    def __init__(self, b0: Float[ArrayLike, ""] = 0.0, b1: Float[ArrayLike, ""] = 1.0, mu: Float[ArrayLike, ""] = 1.0):
        dtype = jnp.result_type(float)
        b1 = jnp.asarray(b1, dtype=dtype)
        if not isinstance(b1, jax.core.Tracer) and not bool(b1 > 0):
            raise ValueError(f"b1 = {b1} must be > 0")
        self.b0 = jnp.asarray(b0, dtype=dtype)
        self.b1_raw = _inverse_softplus(b1)
        self.mu = jnp.asarray(mu, dtype=dtype)

    @property
    def b1(self) -> Float[Array, ""]:
        """$b_1 = \\mathrm{softplus}(\\tilde b_1) > 0$."""
        return jax.nn.softplus(self.b1_raw)

    def __call__(self, one_plus_delta: Float[Array, "*mesh"]) -> Float[Array, "*mesh"]:
        """ReLU(b1 (1+δ)^μ − b0), ≥ 0, of the field's shape."""
        dtype = one_plus_delta.dtype
        b1 = jax.nn.softplus(self.b1_raw.astype(dtype))
        return jax.nn.relu(b1 * _pow_floor(one_plus_delta, self.mu) - self.b0.astype(dtype))


class LDL(eqx.Module):
    """Lagrangian Deep Learning: displacement layers, then paint and activate (seed 001 §2.2.1).

    Attributes:
        displacements: the displacement layers, applied in order (seed 001: two).
        activation: the activation layer applied to the painted 1 + δ of the displaced particles.
    """

    displacements: tuple[DisplacementLayer, ...]
    activation: ActivationLayer

    def __init__(self, displacements, activation: ActivationLayer):
        self.displacements = tuple(displacements)
        self.activation = activation

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray | None = None,
        filter: str = "bspline",
        n_displacements: int = 2,
        *,
        alpha: float = 1e-3,
        b1: float = 1.0,
        gradient: str = "exact",
        source_stride: int = 1,
    ) -> LDL:
        """A near-identity start: γ = 1, small α, Ô = 1/k² (B-spline) or Dai & Seljak's smooth cut, b0 = 0, b1, μ = 1.

        The output is then ≈ b1 (1 + δ) of the (slightly displaced) particles.
        With `key`, the displacement parameters get small Gaussian jitters
        (σ = 0.01 on γ and the spline coefficients, 10 % on α) so that the
        layers differ; without it the start is deterministic.

        Args:
            key: optional PRNG key for the jitter.
            filter: "bspline" (default, seed 001) or "parametric" (Dai & Seljak 2021).
            n_displacements: number of displacement layers (seed 001: 2).
            alpha: initial |α|: the B-spline layers start at α (dimensionless, potential
                flow), the parametric ones at −α [h⁻¹ Mpc]² (density-gradient flow).
            b1: initial b1 (units of the output field).
            gradient: the displacement layers' gradient, "exact" or "fd4" (`DisplacementLayer`).
            source_stride: the displacement layers' source sub-sampling (`DisplacementLayer`).
        """
        if filter not in ("bspline", "parametric"):
            raise ValueError(f"filter must be 'bspline' or 'parametric', got {filter!r}")
        if n_displacements < 1:
            raise ValueError(f"n_displacements = {n_displacements} must be >= 1")
        layers = []
        keys = jax.random.split(key, n_displacements) if key is not None else [None] * n_displacements
        for k in keys:
            if filter == "bspline":
                filt = BSplineFilter()
            else:
                # −Ô_G ≈ 1 between k_h = 0.05 and k_l = 4 h Mpc⁻¹, so α < 0 moves particles towards peaks.
                filt = ParametricFilter()
            a = alpha if filter == "bspline" else -alpha
            gamma = 1.0
            if k is not None:
                kg, ka, kc = jax.random.split(k, 3)
                dtype = jnp.result_type(float)
                gamma = 1.0 + 0.01 * jax.random.normal(kg, (), dtype=dtype)
                a = a * (1.0 + 0.1 * jax.random.normal(ka, (), dtype=dtype))
                if filter == "bspline":
                    filt = BSplineFilter(0.01 * jax.random.normal(kc, (filt.coeffs.size,), dtype=dtype))
            layers.append(DisplacementLayer(gamma=gamma, alpha=a, filter=filt, gradient=gradient, source_stride=source_stride))
        return cls(tuple(layers), ActivationLayer(b0=0.0, b1=b1, mu=1.0))

    def displace(
        self,
        pos: Float[Array, "n_ptcl 3"],
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> Float[Array, "n_ptcl 3"]:
        """Apply the displacement layers in order; returns positions [h⁻¹ Mpc], unwrapped."""
        for layer in self.displacements:
            pos = layer(pos, box_size, mesh_shape, mesh_ops)
        return pos

    def __call__(
        self,
        pos: Float[Array, "n_ptcl 3"],
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> Float[Array, "nx ny nz"]:
        """The LDL field on the mesh.

        Args:
            pos: (n_ptcl, 3) comoving dark-matter positions [h⁻¹ Mpc], periodic.
            box_size: box side(s) [h⁻¹ Mpc] (static).
            mesh_shape: (nx, ny, nz) (static); the same mesh is used by every layer.
            mesh_ops: mesh operations (`DisplacementLayer.displacement`); with a
                `nbody.domain.SlabMesh` the result is this device's x-slab.

        Returns:
            (nx, ny, nz) ReLU(b1 (1+δ')^μ − b0) with δ' the overdensity of the displaced particles.
        """
        moved = self.displace(pos, box_size, mesh_shape, mesh_ops)
        return self.activation(paint_one_plus_delta(moved, box_size, mesh_shape, mesh_ops))
