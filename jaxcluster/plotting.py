"""Quick-look figures (matplotlib, headless)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_density_slice", "plot_power_spectrum"]


def plot_density_slice(delta, box_size, ax, thickness: int = 4):
    """Show log10(2 + δ) averaged over the first `thickness` cells along z.

    Args:
        delta: (nx, ny, nz) overdensity.
        box_size: (L_x, L_y, L_z) [h⁻¹ Mpc].
        ax: a matplotlib Axes.
    """
    d = np.asarray(delta)[:, :, :thickness].mean(axis=-1)
    im = ax.imshow(np.log10(2.0 + d).T, origin="lower", extent=(0, box_size[0], 0, box_size[1]), cmap="magma")
    ax.set_xlabel(r"$x$ [$h^{-1}$ Mpc]")
    ax.set_ylabel(r"$y$ [$h^{-1}$ Mpc]")
    return im


def plot_power_spectrum(k, P, ax, P_linear=None, label="PM"):
    """Log-log P(k) [h⁻³ Mpc³] against k [h Mpc⁻¹], with the linear theory if given."""
    ax.loglog(np.asarray(k), np.asarray(P), "o-", ms=3, label=label)
    if P_linear is not None:
        ax.loglog(np.asarray(k), np.asarray(P_linear), "k--", lw=1, label="linear theory")
    ax.set_xlabel(r"$k$ [$h$ Mpc$^{-1}$]")
    ax.set_ylabel(r"$P(k)$ [$h^{-3}$ Mpc$^3$]")
    ax.legend()
