r"""C1/C2 classes of extended X-ray sources from extent and likelihood cuts (XMM-LSS / XXL style).

Published cuts (Xamin; Pacaud et al. 2006, MNRAS 372, 578, §4.2, adopted
for XXL by Pierre et al. 2016, A&A 592, A1, §5 "XXL Paper I"):

* **C1** (uncontaminated extended sources): EXT > 5″, EXT_LH > 33 and DET_LH > 32;
* **C2** (≈ 50 % contamination allowed): EXT > 5″ and 15 < EXT_LH ≤ 33 (not C1).

EXT is the fitted β-model core radius [arcsec], EXT_LH and DET_LH the
extension and detection likelihoods (`measure.py`'s convention). Our fit
approximates Xamin's, so these are "XXL-like" classes; the injection–
recovery of `selection.py` calibrates what they select in our pipeline.
"""

from __future__ import annotations

import math
from typing import SupportsFloat

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = ["C1", "C2", "NOT_EXTENDED", "ClassCuts", "classify"]

NOT_EXTENDED, C1, C2 = 0, 1, 2


class ClassCuts(eqx.Module):
    """Extent and likelihood thresholds of the C1 and C2 classes (static; defaults: XXL's, module docstring).

    Args:
        extent_min: EXT > extent_min [arcsec] for C1 and C2 (5″).
        ext_lh_c1: EXT_LH > ext_lh_c1 for C1 (33).
        det_lh_c1: DET_LH > det_lh_c1 for C1 (32).
        ext_lh_c2: EXT_LH > ext_lh_c2 for C2 (15).

    Raises:
        ValueError: a negative or non-finite threshold, or ext_lh_c2 > ext_lh_c1 (named).
    """

    extent_min: float = eqx.field(static=True)
    ext_lh_c1: float = eqx.field(static=True)
    det_lh_c1: float = eqx.field(static=True)
    ext_lh_c2: float = eqx.field(static=True)

    def __init__(self, extent_min: SupportsFloat = 5.0, ext_lh_c1: SupportsFloat = 33.0,
                 det_lh_c1: SupportsFloat = 32.0, ext_lh_c2: SupportsFloat = 15.0):
        from ..params import check_scalar

        self.extent_min = float(check_scalar("extent_min", extent_min, 0.0, math.inf))
        self.ext_lh_c1 = float(check_scalar("ext_lh_c1", ext_lh_c1, 0.0, math.inf))
        self.det_lh_c1 = float(check_scalar("det_lh_c1", det_lh_c1, 0.0, math.inf))
        self.ext_lh_c2 = float(check_scalar("ext_lh_c2", ext_lh_c2, 0.0, math.inf))
        if self.ext_lh_c2 > self.ext_lh_c1:
            raise ValueError(f"ext_lh_c2 = {self.ext_lh_c2} must be <= ext_lh_c1 = {self.ext_lh_c1}")


def classify(
    extent: Float[ArrayLike, "*s"], ext_lh: Float[ArrayLike, "*s"], det_lh: Float[ArrayLike, "*s"],
    cuts: ClassCuts | None = None,
) -> Int[Array, "*s"]:
    """Class of each source: `C1` (1), `C2` (2) or `NOT_EXTENDED` (0).

    Args:
        extent: fitted core radius [arcsec].
        ext_lh: extension likelihood.
        det_lh: detection likelihood.
        cuts: thresholds (default: XXL's).
    """
    cuts = ClassCuts() if cuts is None else cuts
    extent, ext_lh, det_lh = jnp.asarray(extent), jnp.asarray(ext_lh), jnp.asarray(det_lh)
    extended = extent > cuts.extent_min
    c1 = extended & (ext_lh > cuts.ext_lh_c1) & (det_lh > cuts.det_lh_c1)
    c2 = extended & (ext_lh > cuts.ext_lh_c2) & ~c1
    return jnp.where(c1, C1, jnp.where(c2, C2, NOT_EXTENDED)).astype(jnp.int32)
