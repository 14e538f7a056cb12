r"""How well painted gas matches a hydrodynamical truth: the figures of seed 001 §3.

Three levels, each a pure function of arrays:

* **voxels** (Fig. 5): the $n_e$–$ρ_{\rm DM}/ρ_c$ relation, a power law fitted
  to each of truth and prediction in log space, and the Pearson correlation of
  the voxels' deviations from their own fit (`voxel_deviations`);
* **clusters** (Fig. 6): count rates summed within a sphere around each halo of
  a catalogue (`cluster_count_rates`), a power-law CR–M relation fitted to each
  of truth and prediction, the correlation of the clusters' deviations from
  their own relation and the per-cluster error
  $\log_{10}(\mathrm{CR_{pred}}/\mathrm{CR_{true}})$ in dex (`cluster_deviations`);
* **fields**: $P(k)$ and the cross-correlation $r(k)$ of $n_e^2 T^{1/2}$
  (`jaxcluster.nbody.power`).

Fitting each sample to its own relation (not the truth's) is the seed's
definition: the deviation correlation measures whether the painter knows
*which* clusters are over- or under-luminous, independently of a global bias.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float


__all__ = ["PowerLawDeviations", "power_law_deviations", "voxel_deviations", "cluster_count_rates", "cluster_deviations"]


class PowerLawDeviations(NamedTuple):
    """Two samples y_true(x), y_pred(x), each fitted by log10 y = a + b log10 x.

    Attributes:
        slope_true: b of the truth's fit.
        slope_pred: b of the prediction's fit.
        norm_true: a of the truth's fit (log10 y at x = pivot).
        norm_pred: a of the prediction's fit.
        scatter_true: rms deviation of the truth from its fit [dex].
        scatter_pred: rms deviation of the prediction from its fit [dex].
        dev_corr: Pearson correlation of the two samples' deviations.
        err_dex_mean: mean of log10(y_pred / y_true) [dex].
        err_dex_std: standard deviation of log10(y_pred / y_true) [dex].
        n: number of points used.
        pivot: the x the normalisations refer to.
    """

    slope_true: float
    slope_pred: float
    norm_true: float
    norm_pred: float
    scatter_true: float
    scatter_pred: float
    dev_corr: float
    err_dex_mean: float
    err_dex_std: float
    n: int
    pivot: float


def power_law_deviations(
    x: ArrayLike, y_true: ArrayLike, y_pred: ArrayLike, pivot: float | None = None
) -> tuple[PowerLawDeviations, np.ndarray, np.ndarray]:
    """Fit log10 y = a + b log10(x / pivot) to each sample; compare the deviations.

    Points where any of x, y_true, y_pred is not positive and finite are dropped.

    Args:
        x: (n,) the abscissa (ρ_DM/ρ_c, a mass), > 0.
        y_true: (n,) truth, > 0.
        y_pred: (n,) prediction, > 0.
        pivot: x of the normalisations (default: the median of x).

    Returns:
        (the statistics, deviations of the truth [dex], deviations of the prediction [dex]).

    Raises:
        ValueError: fewer than 3 usable points, or shapes that differ.
    """
    x, yt, yp = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y_true, y_pred))
    if not (x.shape == yt.shape == yp.shape):
        raise ValueError(f"x, y_true, y_pred must have one shape, got {x.shape}, {yt.shape}, {yp.shape}")
    ok = np.isfinite(x) & np.isfinite(yt) & np.isfinite(yp) & (x > 0) & (yt > 0) & (yp > 0)
    if ok.sum() < 3:
        raise ValueError(f"need ≥ 3 points with positive finite x, y_true, y_pred, got {int(ok.sum())}")
    x, yt, yp = x[ok], yt[ok], yp[ok]
    pivot = float(np.median(x)) if pivot is None else float(pivot)
    lx = np.log10(x / pivot)
    fits, devs = [], []
    for y in (yt, yp):
        b, a = np.polyfit(lx, np.log10(y), 1)
        fits.append((a, b))
        devs.append(np.log10(y) - (a + b * lx))
    err = np.log10(yp / yt)
    stats = PowerLawDeviations(
        slope_true=float(fits[0][1]), slope_pred=float(fits[1][1]),
        norm_true=float(fits[0][0]), norm_pred=float(fits[1][0]),
        scatter_true=float(np.std(devs[0])), scatter_pred=float(np.std(devs[1])),
        dev_corr=float(np.corrcoef(devs[0], devs[1])[0, 1]),
        err_dex_mean=float(np.mean(err)), err_dex_std=float(np.std(err)),
        n=int(x.size), pivot=pivot,
    )
    return stats, devs[0], devs[1]


def voxel_deviations(
    rho_over_rho_c: ArrayLike, n_e_true: ArrayLike, n_e_pred: ArrayLike, rho_min: float = 200.0
) -> tuple[PowerLawDeviations, np.ndarray, np.ndarray]:
    """The n_e–ρ_DM/ρ_c relation of seed 001 Fig. 5 in voxels with ρ_DM/ρ_c ≥ `rho_min`.

    Args:
        rho_over_rho_c: dark-matter density over the critical density, any shape.
        n_e_true: true electron density (any unit), same shape.
        n_e_pred: painted electron density (the same unit), same shape.
        rho_min: the collapsed-voxel threshold (default 200, the seed's cluster threshold).
    """
    r = np.asarray(rho_over_rho_c, dtype=np.float64).ravel()
    sel = r >= rho_min
    return power_law_deviations(r[sel], np.asarray(n_e_true).ravel()[sel], np.asarray(n_e_pred).ravel()[sel])


@jax.jit
def cluster_count_rates(
    cr_voxels: Float[Array, "nx ny nz"],
    centres: Float[Array, "n_halo 3"],
    radii: Float[Array, " n_halo"],
    box_size: Float[ArrayLike, " 3"],
) -> Float[Array, " n_halo"]:
    """Sum a per-voxel quantity over the voxels whose centres lie within each sphere.

    Periodic distances; a halo's sphere is its spherical-overdensity radius.

    Args:
        cr_voxels: (nx, ny, nz) count rate (or any extensive quantity) per voxel.
        centres: (n_halo, 3) comoving centres [h⁻¹ Mpc].
        radii: (n_halo,) comoving radii [h⁻¹ Mpc].
        box_size: (3,) box sides [h⁻¹ Mpc].

    Returns:
        (n_halo,) the sums.
    """
    shape = cr_voxels.shape
    box = jnp.asarray(box_size, dtype=cr_voxels.dtype)
    axes = [(jnp.arange(n, dtype=cr_voxels.dtype) + 0.5) * (box[i] / n) for i, n in enumerate(shape)]

    def one(c, r):
        d2 = []
        for i, x in enumerate(axes):
            d = jnp.abs(x - c[i])
            d = jnp.minimum(d, box[i] - d)
            d2.append(d**2)
        inside = (d2[0][:, None, None] + d2[1][None, :, None] + d2[2][None, None, :]) <= r**2
        return jnp.sum(jnp.where(inside, cr_voxels, 0.0))

    return jax.lax.map(lambda cr: one(*cr), (centres.astype(cr_voxels.dtype), radii.astype(cr_voxels.dtype)))


def cluster_deviations(
    mass: ArrayLike, cr_true: ArrayLike, cr_pred: ArrayLike, valid: Bool[ArrayLike, " n"] | None = None
) -> tuple[PowerLawDeviations, np.ndarray, np.ndarray]:
    """The CR–M relation of seed 001 Fig. 6: fits, deviation correlation, per-cluster error in dex.

    Args:
        mass: (n,) cluster masses [h⁻¹ M☉] (e.g. M_200c).
        cr_true: (n,) true count rates [counts s⁻¹].
        cr_pred: (n,) painted count rates [counts s⁻¹].
        valid: (n,) which entries are clusters (default: all).
    """
    m = np.asarray(mass, dtype=np.float64)
    keep = np.ones(m.shape, bool) if valid is None else np.asarray(valid, bool)
    return power_law_deviations(m[keep], np.asarray(cr_true)[keep], np.asarray(cr_pred)[keep])
