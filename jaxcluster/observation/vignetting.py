r"""EPIC-pn vignetting: the off-axis fraction of the on-axis effective area, V(θ, E).

A source at off-axis angle θ is seen with the area $V(θ, E)\,A(E)$; exposure maps in
"on-axis-equivalent seconds" are $t\,V(θ, E_b)$ at each band's mean energy $E_b$.

**Form used (an approximation of ours, not a calibration fit):**

$$ V(θ, E) = 1 - c(E)\,(θ / 15')^2, \qquad c(E) = c_0 + c_1\,(E/\mathrm{keV} - 1), $$

with $c_0 = 0.40$, $c_1 = 0.02$ keV⁻¹, clipped to ≥ 0. It reproduces the shape of
the XMM-Newton Users Handbook (Fig. 13 of §3.2.2.2, "vignetting function … of the
X-ray telescope 2 in front of the pn camera", from ray tracing) below 2 keV to a
few per cent: 1 on axis, ≈ 0.9 at 5′, ≈ 0.6 at the 15′ edge of the field of view, and
a weak steepening with energy (the hard-energy drop-off happens above our bands).
The calibration itself is the CCF component XRT3_XAREAEF (SAS), tabulated in θ and
E, with the in-orbit check of Lumb et al. (2003, Exp. Astron. 15, 89); replacing
`vignetting` by an interpolation of that table changes nothing else here.
The azimuthal (RGA) modulation concerns the MOS telescopes only (UHB §3.2.2.2).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = ["FOV_RADIUS_ARCMIN", "vignetting"]

FOV_RADIUS_ARCMIN = 15.0  # EPIC field of view: 30′ diameter (XMM-Newton Users Handbook §3.3)
_C0 = 0.40  # 1 − V(15′) at 1 keV (approximation, module docstring)
_C1 = 0.02  # its change per keV (approximation, module docstring) [keV⁻¹]


def vignetting(off_axis_arcmin: Float[ArrayLike, "..."], energy_keV: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
    """Vignetting V(θ, E) ∈ [0, 1] at off-axis angle θ [arcmin] and photon energy E [keV] (broadcast together).

    Defined for all θ ≥ 0 (the field-of-view cut is applied by the exposure map).
    """
    theta = jnp.asarray(off_axis_arcmin)
    e = jnp.asarray(energy_keV).astype(theta.dtype)
    c = _C0 + _C1 * (e - 1.0)
    return jnp.clip(1.0 - c * (theta / FOV_RADIUS_ARCMIN) ** 2, 0.0, 1.0)
