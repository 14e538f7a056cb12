"""The figures of `jaxcluster simulate`: each box's map, the whole lightcone, the XOD and dN/dz.

Sky maps are drawn on the maps' WCS (RA/Dec axes, east to the left) with a
colour bar in counts s⁻¹ per pixel. Detections are marked by shape *and*
colour, both readable with any colour vision on the magma colour map: open
white circles for the sources above the CR cut (they enter the XOD), small
sky-blue crosses (Okabe & Ito 2008 palette) for the fainter ones. Titles state the settings of the run. Every figure is written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib import patheffects

from ..io.atomic import atomic_path
from ..plotting import param_label

__all__ = ["SELECTED_STYLE", "FAINT_STYLE", "survey_figures"]

# white and Okabe & Ito's (2008) sky blue: both stand out on magma's blacks and oranges; the shapes differ too
# (a black outline keeps them visible on the brightest pixels too)
_OUTLINE = [patheffects.withStroke(linewidth=3.2, foreground="black")]
SELECTED_STYLE = dict(marker="o", s=90, facecolors="none", edgecolors="white", linewidths=1.6, path_effects=_OUTLINE)
FAINT_STYLE = dict(marker="x", s=36, c="#56B4E9", linewidths=1.5, path_effects=_OUTLINE)
CR_UNIT_TEX = r"counts s$^{-1}$"


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _theta_text(theta: Mapping[str, float]) -> str:
    return ", ".join(f"{param_label(k)} = {v:.3g}" for k, v in theta.items())


def _mark(ax, pix, selected, valid, with_labels: bool):
    """Scatter the detections of `valid` at 0-based pixel coordinates `pix` (n, 2)."""
    faint = valid & ~selected
    ax.scatter(pix[faint, 0], pix[faint, 1], label="below the CR cut" if with_labels else None, **FAINT_STYLE)
    ax.scatter(pix[selected, 0], pix[selected, 1], label="above the CR cut" if with_labels else None, **SELECTED_STYLE)


def _sky_axes(fig, rect, wcs2d, n_pix, *, ticks: int, left: bool, bottom: bool):
    ax = fig.add_subplot(*rect, projection=wcs2d)
    ra, dec = ax.coords[0], ax.coords[1]
    for c in (ra, dec):
        c.set_major_formatter("d.d")
        c.set_ticks(number=ticks)
        c.set_ticklabel(size=7)
    ra.set_axislabel("RA [deg]" if bottom else "", fontsize=8)
    dec.set_axislabel("Dec [deg]" if left else "", fontsize=8)
    ra.set_ticklabel_visible(bottom)
    dec.set_ticklabel_visible(left)
    ax.set_xlim(-0.5, n_pix - 0.5)
    ax.set_ylim(-0.5, n_pix - 0.5)
    return ax


def survey_figures(out, *, maps, cat, hard_xod, config, z_boxes, wcs, theta: Mapping[str, float], seed: int,
                   pixel_arcmin: float) -> list[str]:
    """Write ``maps.png``, ``lightcone.png``, ``xod.png`` and ``dndz.png`` in ``out`` (first lightcone's maps).

    Args:
        out: output directory (`pathlib.Path`).
        maps: `BoxMaps` with leading axes (n_lightcones, n_boxes).
        cat: `Catalogue` with leading axes (n_lightcones, n_boxes, max_sources).
        hard_xod: (n_cr, n_hr, n_z) survey XOD.
        config: `SurveyConfig`.
        z_boxes: (n_boxes,) box redshifts.
        wcs: the maps' 3-D `astropy.wcs.WCS`.
        theta: θ_sim by name (titles).
        seed: the run's seed (titles).
        pixel_arcmin: actual pixel side [arcmin].

    Returns:
        The names written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    from .products import source_pixels

    g = config.geometry
    wcs2d = wcs.celestial
    cr = np.asarray(maps.count_rate[0], np.float64).sum(-1)  # (box, ξx, ξy), first lightcone
    n_box = cr.shape[0]
    pix = source_pixels(np.asarray(cat.xi[0]), g)  # (box, s, 2)
    valid = np.asarray(cat.valid[0])
    sel = valid & (np.asarray(cat.count_rate_total[0]) > config.cr_min)
    cut = f"CR[0.5–2 keV] > {config.cr_min:g} {CR_UNIT_TEX}"
    setting = (f"{g.area_deg2:g} deg², {pixel_arcmin:.3g}′ pixels, {g.cell_size:g} $h^{{-1}}$ Mpc cells, "
               f"z = {g.z_min:g}–{g.z_max:g}, seed {seed}")
    written = []

    # ---- maps.png: each box of the first lightcone
    ncol = min(4, n_box)
    nrow = math.ceil(n_box / ncol)
    fig = plt.figure(figsize=(3.0 * ncol + 1.3, 3.0 * nrow + 1.0), layout="constrained")
    pos = cr[cr > 0]
    vmin = max(float(np.quantile(pos, 0.5)) if pos.size else 1e-8, 1e-9)
    vmax = max(float(cr.max()), vmin * 10)
    norm = LogNorm(vmin, vmax)
    axes = []
    for b in range(n_box):
        row, column = divmod(b, ncol)
        bottom = row == nrow - 1 or b + ncol >= n_box
        ax = _sky_axes(fig, (nrow, ncol, b + 1), wcs2d, g.n_pix, ticks=3, left=column == 0, bottom=bottom)
        im = ax.imshow(np.maximum(cr[b].T, vmin), origin="lower", norm=norm, cmap="magma")
        _mark(ax, pix[b], sel[b], valid[b], with_labels=b == 0)
        ax.set_title(f"box {b}: z = {float(z_boxes[b]):.3f}, {int(sel[b].sum())}/{int(valid[b].sum())} above cut",
                     fontsize=8)
        axes.append(ax)
    fig.colorbar(im, ax=axes, label=f"CR[0.5–2 keV] per pixel [{CR_UNIT_TEX}]", shrink=0.8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8,
               title=f"detections (cut: {cut})", title_fontsize=8, facecolor="0.6")
    fig.suptitle(f"EPIC-pn [0.5–2 keV] count rate per box, lightcone 0: {setting}", fontsize=10)
    _save(fig, out / "maps.png")
    plt.close(fig)
    written.append("maps.png")

    # ---- lightcone.png: the projected lightcone (sum over the boxes) with all detections
    total = cr.sum(0)
    fig = plt.figure(figsize=(7.2, 6.6), layout="constrained")
    ax = _sky_axes(fig, (1, 1, 1), wcs2d, g.n_pix, ticks=5, left=True, bottom=True)
    pos = total[total > 0]
    lo = max(float(np.quantile(pos, 0.5)) if pos.size else 1e-8, 1e-9)
    im = ax.imshow(np.maximum(total.T, lo), origin="lower", norm=LogNorm(lo, max(float(total.max()), 10 * lo)),
                   cmap="magma")
    _mark(ax, pix.reshape(-1, 2), sel.reshape(-1), valid.reshape(-1), with_labels=True)
    fig.colorbar(im, ax=ax, label=f"CR[0.5–2 keV] per pixel, all boxes [{CR_UNIT_TEX}]", shrink=0.85)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8, facecolor="0.6",
               title=f"{int(valid.sum())} detections", title_fontsize=8)
    ax.set_title(f"projected lightcone 0, z = {g.z_min:g}–{g.z_max:g} ({n_box} boxes): {int(sel.sum())} with {cut}\n"
                 f"{setting}\n{_theta_text(theta)}", fontsize=9)
    _save(fig, out / "lightcone.png")
    plt.close(fig)
    written.append("lightcone.png")

    # ---- xod.png: CR–HR slices per z bin
    b = config.binning
    n_z = b.shape[2]
    xod = np.asarray(hard_xod)
    fig, axes = plt.subplots(1, n_z, figsize=(3.1 * n_z + 1.4, 3.9), squeeze=False, sharey=True, layout="constrained")
    for k, ax in enumerate(axes[0]):
        im = ax.pcolormesh(b.cr_edges, b.hr_edges, xod[:, :, k].T, cmap="viridis", vmin=0, vmax=max(1.0, xod.max()))
        if b.cr_edges[0] <= config.cr_min < b.cr_edges[-1]:  # the cut inside the binned range (often its left edge)
            ax.axvline(config.cr_min, color="#D55E00", ls="--", lw=1.2, label=f"CR cut ({config.cr_min:g} {CR_UNIT_TEX})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(b.cr_edges[0], b.cr_edges[-1])
        ax.set_ylim(b.hr_edges[0], b.hr_edges[-1])
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"CR[0.5–2 keV] [{CR_UNIT_TEX}]")
        n_k = xod[:, :, k].sum()
        ax.set_title(f"{b.z_edges[k]:.2f} ≤ z < {b.z_edges[k + 1]:.2f}: {n_k:.0f} cluster{'' if n_k == 1 else 's'}",
                     fontsize=9)
    axes[0, 0].set_ylabel("HR = CR[1–2 keV] / CR[0.5–1 keV]")
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(loc="lower right", fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), label="clusters per bin", ticks=MaxNLocator(integer=True))
    fig.suptitle(f"XOD (hard): {xod.sum():.0f} cluster{'' if xod.sum() == 1 else 's'} in {config.area_deg2:g} deg² "
                 f"({config.n_lightcones} × {g.area_deg2:g} deg²), {cut}\n{_theta_text(theta)}", fontsize=10)
    _save(fig, out / "xod.png")
    plt.close(fig)
    written.append("xod.png")

    # ---- dndz.png
    z_all = np.asarray(cat.z)[np.asarray(cat.valid)]
    z_sel = np.asarray(cat.z)[np.asarray(cat.selected(config.cr_min))]
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    edges = np.linspace(g.z_min, g.z_max, 9)
    ax.hist(z_all, bins=edges, histtype="step", lw=1.5, color="#D55E00", label=f"all detections ({z_all.size})")
    ax.hist(z_sel, bins=edges, histtype="stepfilled", alpha=0.7, color="#56B4E9",
            label=f"above the cut ({z_sel.size})")
    ax.set_xlabel("redshift $z$")
    ax.set_ylabel(f"sources per Δz = {edges[1] - edges[0]:.2f}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, title=cut, title_fontsize=8)
    ax.set_title(f"dN/dz in {config.area_deg2:g} deg² ({config.n_lightcones} lightcone"
                 f"{'s' if config.n_lightcones > 1 else ''}), seed {seed}\n{_theta_text(theta)}", fontsize=9)
    _save(fig, out / "dndz.png")
    plt.close(fig)
    written.append("dndz.png")
    return written
