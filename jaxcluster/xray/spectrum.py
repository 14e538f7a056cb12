r"""Rest-frame plasma spectra from pyatomdb (host-side NumPy, used to build tables).

Two spectral models, both per unit emission measure $n_e n_H V$ and returned
as photons cm³ s⁻¹ per energy bin (the APEC convention):

``"apec"``
    the full collisional-ionisation-equilibrium spectrum (continuum,
    pseudo-continuum and lines) from ``pyatomdb.spectrum.CIESession``. Needs
    the AtomDB emissivity files ``$ATOMDB/apec_line.fits`` and
    ``apec_coco.fits`` (downloaded by ``pyatomdb.util.initialize()``).
``"brems"``
    pyatomdb's data-free free–free continuum,
    ``pyatomdb.apec.do_brems(Z, z1, T_K, abund, 2, edges)`` with the
    Kellogg et al. (1975) semi-relativistic Gaunt factor (``brems_type = 2``),
    summed over Z = 1 … 30 for a **fully ionised** plasma (one ion per
    element, charge Z, i.e. ``z1 = Z + 1``) weighted by the abundance
    $n_Z/n_H$. No lines, no recombination or two-photon continuum: this
    under-predicts the soft-band emission of plasmas with kT ≲ 2 keV, where
    Fe-L and O lines matter; it is what pyatomdb can give without its data.

Abundances: Anders & Grevesse (1989) (pyatomdb's and XSPEC's default
``AG89``/``angr`` set, `AG89_ABUNDANCE`); H and He solar, every element
Z ≥ 3 scaled by ``metallicity`` (0.3 by default, seed 001 §2.3).

pyatomdb is imported lazily through `jaxcluster.xray._atomdb.import_pyatomdb`,
which guarantees it never prompts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import SupportsFloat

import numpy as np
import numpy.typing as npt

from ._atomdb import apec_data_files, import_pyatomdb

__all__ = [
    "AG89_ABUNDANCE",
    "SPECTRAL_METHODS",
    "abundances",
    "electron_to_hydrogen_ratio",
    "resolve_method",
    "rest_frame_spectrum",
    "spectrum_model",
]

# Anders & Grevesse (1989), Geochim. Cosmochim. Acta 53, 197: number abundance
# relative to hydrogen, Z = 1 … 30 (the AG89 set of pyatomdb / angr of XSPEC).
AG89_ABUNDANCE: dict[int, float] = {
    1: 1.00e00, 2: 9.77e-02, 3: 1.45e-11, 4: 1.41e-11, 5: 3.98e-10, 6: 3.63e-04,
    7: 1.12e-04, 8: 8.51e-04, 9: 3.63e-08, 10: 1.23e-04, 11: 2.14e-06, 12: 3.80e-05,
    13: 2.95e-06, 14: 3.55e-05, 15: 2.82e-07, 16: 1.62e-05, 17: 3.16e-07, 18: 3.63e-06,
    19: 1.32e-07, 20: 2.29e-06, 21: 1.26e-09, 22: 9.77e-08, 23: 1.00e-08, 24: 4.68e-07,
    25: 2.45e-07, 26: 4.68e-05, 27: 8.32e-08, 28: 1.78e-06, 29: 1.62e-08, 30: 3.98e-08,
}  # fmt: skip

SPECTRAL_METHODS = ("auto", "apec", "brems")
_KELLOGG = 2  # pyatomdb.const.KELLOGG: semi-relativistic Gaunt factor


def _check_metallicity(metallicity) -> float:
    m = float(metallicity)
    if not (0.0 <= m <= 10.0) or not np.isfinite(m):
        raise ValueError(f"metallicity = {metallicity}: must be in [0, 10] (solar units)")
    return m


def abundances(metallicity: SupportsFloat = 0.3) -> dict[int, float]:
    """Number abundances $n_Z/n_H$: AG89, H and He solar, Z ≥ 3 × metallicity."""
    m = _check_metallicity(metallicity)
    return {Z: a * (m if Z >= 3 else 1.0) for Z, a in AG89_ABUNDANCE.items()}


def electron_to_hydrogen_ratio(metallicity: SupportsFloat = 0.3) -> float:
    """$n_e/n_H = \\sum_Z Z\\, n_Z/n_H$ for a fully ionised plasma (1.199 at 0.3 solar)."""
    return float(sum(Z * a for Z, a in abundances(metallicity).items()))


def resolve_method(method: str, cache_dir: str | os.PathLike | None = None) -> str:
    """``"auto"`` → ``"apec"`` when the AtomDB files are installed, else ``"brems"``.

    Raises:
        ValueError: unknown method, or ``"apec"`` without the AtomDB files.
    """
    if method not in SPECTRAL_METHODS:
        raise ValueError(f"method = {method!r}: must be one of {SPECTRAL_METHODS}")
    has_apec = apec_data_files(cache_dir) is not None
    if method == "auto":
        return "apec" if has_apec else "brems"
    if method == "apec" and not has_apec:
        raise ValueError(
            "method = 'apec' needs $ATOMDB/apec_line.fits and apec_coco.fits "
            "(install them with pyatomdb.util.initialize()); use method='brems' otherwise"
        )
    return method


def _check_edges(edges_keV) -> np.ndarray:
    e = np.asarray(edges_keV, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) < 0) or e[0] <= 0:
        raise ValueError("edges_keV must be 1-D, increasing, > 0, with at least 2 edges")
    return e


def spectrum_model(
    method: str = "auto",
    metallicity: SupportsFloat = 0.3,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[str, Callable[[float, np.ndarray], np.ndarray]]:
    """A spectrum function ``f(T_keV, edges_keV) -> photons cm³ s⁻¹ per bin``.

    For ``"apec"`` the returned function holds one ``CIESession`` and re-sets
    its energy grid only when the edges change (so build loops run over T at
    fixed edges). Host-side only; not a JAX function.

    Returns:
        (the resolved method name, the function).
    """
    method = resolve_method(method, cache_dir)
    abund = abundances(metallicity)
    pyatomdb = import_pyatomdb(cache_dir)

    if method == "brems":
        from pyatomdb import apec, const

        def brems(T_keV: SupportsFloat, edges_keV: npt.ArrayLike) -> np.ndarray:
            e = _check_edges(edges_keV)
            T_K = float(T_keV) / const.KBOLTZ
            out = np.zeros(e.size - 1)
            for Z, a in abund.items():
                if a > 0:
                    out += apec.do_brems(Z, Z + 1, T_K, a, _KELLOGG, e)
            return out

        return method, brems

    line, coco = apec_data_files(cache_dir)
    session = pyatomdb.spectrum.CIESession(linefile=str(line), cocofile=str(coco), abundset="AG89")
    metals = [Z for Z in AG89_ABUNDANCE if Z >= 3]
    session.set_abund(metals, _check_metallicity(metallicity))
    state: dict[str, np.ndarray] = {}

    def apec_spectrum(T_keV: SupportsFloat, edges_keV: npt.ArrayLike) -> np.ndarray:
        e = _check_edges(edges_keV)
        if "edges" not in state or not np.array_equal(state["edges"], e):
            session.set_response(e, raw=True)
            state["edges"] = e
        return np.asarray(session.return_spectrum(float(T_keV), teunit="keV"), dtype=np.float64)

    return method, apec_spectrum


def rest_frame_spectrum(
    T_keV: SupportsFloat,
    edges_keV: npt.ArrayLike,
    *,
    metallicity: SupportsFloat = 0.3,
    method: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Rest-frame photon spectrum per unit emission measure, integrated over bins.

    Args:
        T_keV: plasma temperature kT [keV], > 0.
        edges_keV: (n + 1,) rest-frame energy bin edges [keV], increasing.
        metallicity: metal abundance relative to AG89 solar.
        method: ``"auto"``, ``"apec"`` or ``"brems"`` (module docstring).
        cache_dir: AtomDB directory when ``$ATOMDB`` is unset.

    Returns:
        (n,) photons cm³ s⁻¹ emitted in each bin per $n_e n_H$ (so that
        photons s⁻¹ = EM × spectrum with EM = ∫ n_e n_H dV in cm⁻³).
    """
    if not (float(T_keV) > 0):
        raise ValueError(f"T_keV = {T_keV}: must be > 0")
    _, f = spectrum_model(method, metallicity, cache_dir)
    return f(T_keV, edges_keV)
