"""Quick-look figures (matplotlib, headless)."""

from __future__ import annotations

import numpy as np

__all__ = ["PARAM_LABELS", "param_label", "plot_density_slice", "plot_power_spectrum"]

# θ_sim (seed 001 Table 1) and the scaling-relation parameters of the analytic model, typeset for matplotlib
PARAM_LABELS: dict[str, str] = {
    "Omega_m": r"$\Omega_{\rm m}$", "sigma_8": r"$\sigma_8$",
    "A_SN1": r"$A_{\rm SN1}$", "A_SN2": r"$A_{\rm SN2}$", "A_AGN1": r"$A_{\rm AGN1}$", "A_AGN2": r"$A_{\rm AGN2}$",
    "log10_M0": r"$\log_{10} M_0$", "alpha_MT": r"$\alpha_{MT}$", "gamma_MT": r"$\gamma_{MT}$",
    "log10_L0": r"$\log_{10} L_0$", "alpha_LT": r"$\alpha_{LT}$", "gamma_LT": r"$\gamma_{LT}$",
}


def param_label(name: str) -> str:
    """The typeset (mathtext) label of a parameter name; unknown names are returned as they are."""
    return PARAM_LABELS.get(name, name)


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
