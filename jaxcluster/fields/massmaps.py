r"""How well a reconstructed projected-mass map matches the truth (seeds 002 §4, 004).

Every function is pure, works on one map or a stack of maps with the two
image axes last, and takes pixel units unless a ``pixel_size`` is given
(then k is in inverse units of ``pixel_size``). Spatial domain:

* `pixel_relative_difference`: $D_{ij} = (\hat I_{ij} - I_{ij}) / I_{ij}$
  (seed 004 eq. 6), optionally inside a circular aperture;
* `azimuthal_profile`, `radial_profile_fractional_error`: azimuthally averaged
  profile and $(\hat\Sigma(r) - \Sigma(r))/\Sigma(r)$ (seed 002 Fig. 7);
* `radial_mass_bias`: enclosed-mass bias
  $b(<R) = (\hat M(<R) - M(<R)) / M(<R)$ (seed 004 eq. 9);
* `total_mass_fractional_error`: $(\sum \hat I - \sum I)/\sum I$ (seed 002 §4.2);
* `standardised_pixel_errors`: $ε_{ij} = (S_{\rm gen} - S_{\rm sim})/σ_{\rm gen}$
  from posterior samples (seed 002 eq. 12).

Fourier domain (periodic FFT of the map, azimuthal bins in |k|):

* `power_spectrum_2d`, `cross_power_spectrum_2d`;
* `bias_k` $b(k) = \sqrt{P_{\rm gen}/P_{\rm sim}}$ (seed 002 eq. 13);
* `cross_correlation_k` $r(k) = P_{\rm sim\times gen}/\sqrt{P_{\rm sim} P_{\rm gen}}$ (eq. 14);
* `power_ratio` $P_{\rm pred}/P_{\rm true} - 1$ (seed 004 Fig. 8).

Distributions: `maximum_mean_discrepancy` (Gaussian kernel, seed 004 eq. 10).

Divergences: the power spectra are those of the maps as they are (no mean
subtraction, no window), as both seeds do for centred cluster cutouts; the
MMD is the biased (V-statistic) estimator by default, which is exactly zero
for identical samples (``unbiased=True`` gives the U-statistic).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "radial_distance", "pixel_relative_difference", "azimuthal_profile", "radial_profile_fractional_error",
    "radial_mass_bias", "total_mass_fractional_error", "standardised_pixel_errors", "k_edges_2d",
    "power_spectrum_2d", "cross_power_spectrum_2d", "bias_k", "cross_correlation_k", "power_ratio",
    "maximum_mean_discrepancy",
]


def _check_image(name: str, x) -> tuple[int, int]:
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must have at least two (image) axes, got shape {jnp.shape(x)}")
    return tuple(jnp.shape(x)[-2:])


def _check_same(a_name, a, b_name, b) -> tuple[int, int]:
    sa, sb = _check_image(a_name, a), _check_image(b_name, b)
    if sa != sb:
        raise ValueError(f"{a_name} image shape {sa} != {b_name} image shape {sb}")
    return sa


def radial_distance(shape: tuple[int, int], center: tuple[float, float] | None = None) -> Float[Array, "ny nx"]:
    """Distance of every pixel centre from ``center`` [pixels].

    Args:
        shape: (ny, nx) image shape.
        center: (y, x) in pixel coordinates, pixel (i, j) centred at (i, j);
            default the image centre ((ny − 1)/2, (nx − 1)/2).

    Returns:
        (ny, nx) float32 distances in pixels.
    """
    ny, nx = shape
    cy, cx = ((ny - 1) / 2, (nx - 1) / 2) if center is None else center
    y = jnp.arange(ny, dtype=jnp.float32)[:, None] - cy
    x = jnp.arange(nx, dtype=jnp.float32)[None, :] - cx
    return jnp.sqrt(y**2 + x**2)


def pixel_relative_difference(
    pred: Float[Array, "*b ny nx"], true: Float[Array, "*b ny nx"], aperture: float | None = None,
) -> Float[Array, " n"]:
    r"""Pixel-wise relative difference $D = (\hat I - I)/I$ (seed 004 eq. 6), flattened.

    Args:
        pred: predicted maps (any positive density unit; the same as ``true``).
        true: ground-truth maps, > 0 where used.
        aperture: keep only pixels with centre within this radius of the image
            centre [pixels] (seed 004 uses R500 and R500/2); default all pixels.

    Returns:
        1-D array of D over the selected pixels of every map (concrete shape, so
        not under jit when ``aperture`` is given).
    """
    shape = _check_same("pred", pred, "true", true)
    d = (pred - true) / true
    if aperture is None:
        return d.reshape(-1)
    inside = radial_distance(shape) <= aperture
    return d[..., inside].reshape(-1)


def _per_bin(x, counts):
    """x (..., n_bin) / counts (n_bin,), with the rank made explicit (no implicit rank promotion)."""
    return x / counts.reshape((1,) * (x.ndim - 1) + counts.shape)


def _radial_index(shape, r_edges) -> tuple[Array, int]:
    r_edges = jnp.asarray(r_edges, dtype=jnp.float32)
    if r_edges.ndim != 1 or r_edges.shape[0] < 2:
        raise ValueError(f"r_edges must be a 1-D array of >= 2 increasing radii, got shape {r_edges.shape}")
    idx = jnp.searchsorted(r_edges, radial_distance(shape), side="right") - 1
    n_bins = r_edges.shape[0] - 1
    return jnp.where((idx >= 0) & (idx < n_bins), idx, n_bins), n_bins  # n_bins: outside, dropped


def azimuthal_profile(image: Float[Array, "*b ny nx"], r_edges: Float[Array, " n_edge"]) -> Float[Array, "*b n_bin"]:
    """Azimuthally averaged profile: the mean of the pixels whose centre lies in each annulus.

    Args:
        image: map(s); the profile is in the map's unit.
        r_edges: (n_bin + 1,) increasing annulus edges [pixels] from the image centre.

    Returns:
        (*b, n_bin) mean value per annulus (NaN for an empty annulus).
    """
    shape = _check_image("image", image)
    idx, n_bins = _radial_index(shape, r_edges)
    onehot = (idx.reshape(-1)[:, None] == jnp.arange(n_bins, dtype=idx.dtype)[None, :]).astype(image.dtype)  # (n_pix, n_bin)
    flat = image.reshape(*image.shape[:-2], -1)
    return _per_bin(flat @ onehot, jnp.sum(onehot, axis=0))


def radial_profile_fractional_error(
    pred: Float[Array, "*b ny nx"], true: Float[Array, "*b ny nx"], r_edges: Float[Array, " n_edge"],
) -> Float[Array, "*b n_bin"]:
    r"""Fractional error of the azimuthal profile, $(\hat\Sigma(r) - \Sigma(r))/\Sigma(r)$ (seed 002 Fig. 7)."""
    _check_same("pred", pred, "true", true)
    p_true = azimuthal_profile(true, r_edges)
    return (azimuthal_profile(pred, r_edges) - p_true) / p_true


def radial_mass_bias(
    pred: Float[Array, "*b ny nx"], true: Float[Array, "*b ny nx"], radii: Float[Array, " n_r"],
) -> Float[Array, "*b n_r"]:
    r"""Enclosed projected-mass bias $b(<R) = (\hat M(<R) - M(<R))/M(<R)$ (seed 004 eq. 9).

    Args:
        pred: predicted projected mass (or surface density) maps; M(<R) sums the
            pixels whose centre lies within R of the image centre.
        true: the true maps, same shape.
        radii: (n_r,) aperture radii [pixels].

    Returns:
        (*b, n_r) bias per aperture.
    """
    shape = _check_same("pred", pred, "true", true)
    inside = (radial_distance(shape)[None] <= jnp.asarray(radii, jnp.float32)[:, None, None]).astype(pred.dtype)
    m_pred = jnp.einsum("...yx,ryx->...r", pred, inside)
    m_true = jnp.einsum("...yx,ryx->...r", true, inside)
    return (m_pred - m_true) / m_true


def total_mass_fractional_error(pred: Float[Array, "*b ny nx"], true: Float[Array, "*b ny nx"]) -> Float[Array, "*b"]:
    r"""$(\sum \hat I - \sum I) / \sum I$ over the whole map (seed 002 §4.2)."""
    _check_same("pred", pred, "true", true)
    m_true = jnp.sum(true, axis=(-2, -1))
    return (jnp.sum(pred, axis=(-2, -1)) - m_true) / m_true


def standardised_pixel_errors(
    samples: Float[Array, "n_sample *b ny nx"], true: Float[Array, "*b ny nx"],
) -> Float[Array, "*b ny nx"]:
    r"""Standardised pixel error $ε = (\bar S_{\rm gen} - S_{\rm sim})/σ_{\rm gen}$ (seed 002 eq. 12).

    Args:
        samples: posterior samples, sample axis first.
        true: the simulated map(s).

    Returns:
        ε per pixel (posterior mean minus truth in units of the posterior
        standard deviation, ``ddof=1``).

    Raises:
        ValueError: fewer than two samples.
    """
    _check_same("samples", samples, "true", true)
    if samples.shape[0] < 2 or samples.ndim != true.ndim + 1:
        raise ValueError(f"samples must be (n_sample >= 2, *true.shape), got {samples.shape} for true {true.shape}")
    return (jnp.mean(samples, axis=0) - true) / jnp.std(samples, axis=0, ddof=1)


# ----------------------------------------------------------------- Fourier domain


def k_edges_2d(shape: tuple[int, int], pixel_size: float = 1.0, n_bins: int | None = None) -> np.ndarray:
    """Linear |k| bin edges from the fundamental mode to the Nyquist frequency.

    Args:
        shape: (ny, nx) image shape (square images: the bins are those of ny).
        pixel_size: pixel side (k is returned in radians per unit of it).
        n_bins: number of bins; default ny // 2 − 1 (one fundamental mode wide).

    Returns:
        (n_bins + 1,) edges, the first at half the fundamental, the last at Nyquist.
    """
    n = min(shape)
    k_f, k_nyq = 2 * np.pi / (n * pixel_size), np.pi / pixel_size
    n_bins = n // 2 - 1 if n_bins is None else n_bins
    if n_bins < 1:
        raise ValueError(f"n_bins = {n_bins} must be >= 1")
    return np.linspace(0.5 * k_f, k_nyq, n_bins + 1)


def _fft_bins(shape, pixel_size, k_edges):
    ny, nx = shape
    ky = 2 * np.pi * np.fft.fftfreq(ny, d=pixel_size)
    kx = 2 * np.pi * np.fft.rfftfreq(nx, d=pixel_size)
    k = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    # rfft keeps half the plane: the kx = 0 (and Nyquist for even nx) column counts once, others twice.
    w = np.full(k.shape, 2.0)
    w[:, 0] = 1.0
    if nx % 2 == 0:
        w[:, -1] = 1.0
    edges = np.asarray(k_edges if k_edges is not None else k_edges_2d(shape, pixel_size))
    idx = np.digitize(k, edges) - 1
    n_bins = edges.size - 1
    onehot = np.stack([(idx == b) * w for b in range(n_bins)], axis=-1)  # (ny, nx//2+1, n_bin)
    k_mean = (onehot * k[..., None]).sum((0, 1)) / onehot.sum((0, 1))
    return jnp.asarray(onehot, jnp.float32), jnp.asarray(k_mean, jnp.float32)


def _cross(a, b, pixel_size, k_edges):
    shape = _check_same("a", a, "b", b)
    onehot, k = _fft_bins(shape, pixel_size, k_edges)
    area = shape[0] * shape[1] * pixel_size**2
    fa, fb = jnp.fft.rfft2(a), jnp.fft.rfft2(b)
    p2d = jnp.real(fa * jnp.conj(fb)) * (pixel_size**4 / area)  # P(k) = |ã|² / A, ã = Σ a Δ² e^{-ikx}
    num = jnp.einsum("...yx,yxb->...b", p2d.astype(jnp.float32), onehot)
    return k, _per_bin(num, jnp.sum(onehot, axis=(0, 1)))


def power_spectrum_2d(
    image: Float[Array, "*b ny nx"], pixel_size: float = 1.0, k_edges: Float[Array, " n_edge"] | None = None,
) -> tuple[Float[Array, " n_bin"], Float[Array, "*b n_bin"]]:
    r"""Azimuthally binned power spectrum of a map, $P(k) = \langle|\tilde I(\mathbf k)|^2\rangle / A$.

    Args:
        image: map(s) (periodic FFT over the last two axes).
        pixel_size: pixel side (for instance h⁻¹ Mpc or R200/N); k in rad per its unit.
        k_edges: |k| bin edges; default `k_edges_2d`.

    Returns:
        (k, P): mean |k| of the modes in each bin, and P(k) in [image]² × [pixel_size]².
    """
    return _cross(image, image, pixel_size, k_edges)


def cross_power_spectrum_2d(
    a: Float[Array, "*b ny nx"], b: Float[Array, "*b ny nx"], pixel_size: float = 1.0,
    k_edges: Float[Array, " n_edge"] | None = None,
) -> tuple[Float[Array, " n_bin"], Float[Array, "*b n_bin"]]:
    r"""Azimuthally binned cross spectrum $\mathrm{Re}\langle\tilde a \tilde b^*\rangle / A$ (see `power_spectrum_2d`)."""
    return _cross(a, b, pixel_size, k_edges)


def bias_k(
    gen: Float[Array, "*b ny nx"], sim: Float[Array, "*b ny nx"], pixel_size: float = 1.0,
    k_edges: Float[Array, " n_edge"] | None = None,
) -> tuple[Float[Array, " n_bin"], Float[Array, "*b n_bin"]]:
    r"""$b(k) = \sqrt{P_{\rm gen}(k)/P_{\rm sim}(k)}$ (seed 002 eq. 13); returns (k, b)."""
    k, p_gen = power_spectrum_2d(gen, pixel_size, k_edges)
    _, p_sim = power_spectrum_2d(sim, pixel_size, k_edges)
    return k, jnp.sqrt(p_gen / p_sim)


def cross_correlation_k(
    gen: Float[Array, "*b ny nx"], sim: Float[Array, "*b ny nx"], pixel_size: float = 1.0,
    k_edges: Float[Array, " n_edge"] | None = None,
) -> tuple[Float[Array, " n_bin"], Float[Array, "*b n_bin"]]:
    r"""$r(k) = P_{\rm sim\times gen}/\sqrt{P_{\rm sim}P_{\rm gen}}$ (seed 002 eq. 14); returns (k, r)."""
    k, p_x = cross_power_spectrum_2d(gen, sim, pixel_size, k_edges)
    _, p_gen = power_spectrum_2d(gen, pixel_size, k_edges)
    _, p_sim = power_spectrum_2d(sim, pixel_size, k_edges)
    return k, p_x / jnp.sqrt(p_gen * p_sim)


def power_ratio(
    pred: Float[Array, "*b ny nx"], true: Float[Array, "*b ny nx"], pixel_size: float = 1.0,
    k_edges: Float[Array, " n_edge"] | None = None,
) -> tuple[Float[Array, " n_bin"], Float[Array, "*b n_bin"]]:
    r"""Relative power difference $P_{\rm pred}/P_{\rm true} - 1$ (seed 004 Fig. 8); returns (k, ratio − 1)."""
    k, p_pred = power_spectrum_2d(pred, pixel_size, k_edges)
    _, p_true = power_spectrum_2d(true, pixel_size, k_edges)
    return k, p_pred / p_true - 1


# ----------------------------------------------------------------- distributions


def maximum_mean_discrepancy(
    x: Float[Array, "n *d"], y: Float[Array, "m *d"], bandwidth: float | None = None, unbiased: bool = False,
) -> Float[Array, ""]:
    r"""Squared maximum mean discrepancy with a Gaussian kernel (seed 004 eq. 10).

    $$\mathrm{MMD}^2 = \overline{k(x, x')} + \overline{k(y, y')} - 2\,\overline{k(x, y)},\quad
    k(u, v) = \exp\!\left(-\frac{\lVert u - v\rVert^2}{2 h^2}\right).$$

    Args:
        x: (n, ...) samples (maps are flattened to vectors).
        y: (m, ...) samples of the same trailing shape.
        bandwidth: kernel width h; default the median pairwise distance of
            the pooled samples (the median heuristic).
        unbiased: drop the i = j terms of the within-sample means (U-statistic,
            can be negative); default the V-statistic (≥ 0, zero iff x ≡ y as sets).

    Returns:
        MMD² (scalar).
    """
    x = jnp.reshape(x, (jnp.shape(x)[0], -1))
    y = jnp.reshape(y, (jnp.shape(y)[0], -1))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y samples differ in size: {x.shape[1]} vs {y.shape[1]}")
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("unbiased=True needs at least two samples in x and in y")

    def sqdist(a, b):
        return jnp.maximum(jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T, 0.0)

    dxx, dyy, dxy = sqdist(x, x), sqdist(y, y), sqdist(x, y)
    if bandwidth is None:
        pooled = jnp.concatenate([x, y])
        d = sqdist(pooled, pooled)
        n = pooled.shape[0]
        bandwidth = jnp.sqrt(jnp.median(d[jnp.triu_indices(n, 1)]))
    gamma = 1.0 / (2.0 * jnp.square(bandwidth))
    kxx, kyy, kxy = jnp.exp(-gamma * dxx), jnp.exp(-gamma * dyy), jnp.exp(-gamma * dxy)
    if unbiased:
        n, m = x.shape[0], y.shape[0]
        mxx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
        myy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    else:
        mxx, myy = jnp.mean(kxx), jnp.mean(kyy)
    return mxx + myy - 2 * jnp.mean(kxy)
