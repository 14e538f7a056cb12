"""Figure of an observed field: the noiseless count-rate map beside the photon image, detections by class.

Both panels are drawn on their WCS (RA/Dec, east to the left). Classes are
marked by shape and colour (readable with any colour vision on the grey and
magma maps; Okabe & Ito 2008 palette): C1 open white circles, C2 open
sky-blue squares, the other detections (point-like or insignificant extent)
small orange crosses (on the photon image only). The photon image is shown smoothed by a Gaussian of
σ = 1 pixel (for the eye only; the catalogue is measured on the raw counts).
Written under a temporary name and renamed into place.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..io.atomic import atomic_path

__all__ = ["CLASS_STYLES", "observation_figure"]

_SKY_BLUE, _ORANGE = "#56B4E9", "#E69F00"
CLASS_STYLES = {
    1: dict(marker="o", s=110, facecolors="none", edgecolors="white", linewidths=1.6, label="C1"),
    2: dict(marker="s", s=80, facecolors="none", edgecolors=_SKY_BLUE, linewidths=1.4, label="C2"),
    0: dict(marker="x", s=22, c=_ORANGE, linewidths=1.0, label="other detections"),
}


def _smooth(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(image, np.float64), sigma, mode="constant")


def observation_figure(path, *, noiseless: np.ndarray, counts: np.ndarray, wcs_maps, wcs_obs, ra: np.ndarray,
                       dec: np.ndarray, source_class: np.ndarray, title: str = "",
                       theta: Mapping[str, float] | None = None) -> None:
    """``observation.png``: noiseless [0.5–2] keV map (left) and the photon image (right), detections by class.

    Args:
        path: output PNG.
        noiseless: (n_pix, n_pix) cluster count rate per survey pixel [counts s⁻¹], (ξ_x, ξ_y) order.
        counts: (n, m) photon counts per observation pixel (bands summed), (ξ_x, ξ_y) order.
        wcs_maps, wcs_obs: 2-D celestial WCS of the two images.
        ra, dec: (s,) detections [deg].
        source_class: (s,) 1: C1, 2: C2, 0: other.
        title: settings line.
        theta: θ_sim by name (second title line).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from ..plotting import param_label

    fig = plt.figure(figsize=(12.5, 6.2), layout="constrained")
    panels = []
    for k, (img, wcs, what) in enumerate(((noiseless, wcs_maps, "noiseless cluster map, counts s$^{-1}$ pixel$^{-1}$"),
                                          (_smooth(counts), wcs_obs, "photons, 0.5–2 keV (σ = 1 pixel smoothing)"))):
        ax = fig.add_subplot(1, 2, k + 1, projection=wcs)
        img = np.asarray(img, np.float64).T  # (ξ_x, ξ_y) → (y, x)
        pos = img[img > 0]
        lo = float(np.quantile(pos, 0.05)) if pos.size else 1e-9
        hi = max(float(img.max()), lo * 10)
        im = ax.imshow(np.maximum(img, lo), origin="lower", norm=LogNorm(lo, hi),
                       cmap="magma" if k == 0 else "gray")
        fig.colorbar(im, ax=ax, shrink=0.8, pad=0.01).set_label(what, fontsize=8)
        ax.coords[0].set_axislabel("RA [deg]")
        ax.coords[1].set_axislabel("Dec [deg]")
        for c in ax.coords:
            c.set_major_formatter("d.dd")
        x, y = wcs.world_to_pixel_values(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
        for cls in ((2, 1) if k == 0 else (0, 2, 1)):  # the noiseless panel: the extended classes only
            sel = np.asarray(source_class) == cls
            style = dict(CLASS_STYLES[cls])
            label = style.pop("label")
            ax.scatter(x[sel], y[sel], label=f"{label} ({int(sel.sum())})", **style)
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(-0.5, img.shape[0] - 0.5)
        panels.append(ax)
    leg = panels[1].legend(loc="upper right", fontsize=8, framealpha=0.8)
    leg.get_frame().set_facecolor("0.3")
    for t in leg.get_texts():
        t.set_color("white")
    line2 = ", ".join(f"{param_label(k)} = {v:.3g}" for k, v in (theta or {}).items())
    fig.suptitle(f"Observed field: {title}" + (f"\n{line2}" if line2 else ""), fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
