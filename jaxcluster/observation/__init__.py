"""Observation model: XMM-Newton EPIC-pn photon images from noiseless count-rate maps (issue #23).

Pointings and exposure with vignetting (`pointings`, `vignetting`), the King PSF
(`psf`), Galactic absorption (`absorption`), particle and sky backgrounds
(`background`), AGN from the logN–logS (`agn`), and Poisson photon images
(`photons.observe` → `Observation`); then detection on the photon images
(`detection.detect`), source fits, photometry and extent (`measure`), clusters
blended with AGN fitted together with them (`blends`), XXL-like
C1/C2 classes (`classes`), and the injection–recovery selection function
(`selection`).
"""

from .absorption import (
    MM83_TABLE,
    NH_XXL_NORTH_CM2,
    band_transmission,
    cross_section_cm2,
    power_law_photon_spectrum,
    thermal_photon_spectrum,
    transmission,
)
from .agn import (
    MORETTI03_SOFT,
    AGNCatalogue,
    draw_agn,
    energy_conversion_factor,
    expected_number,
    flux_above,
    n_above,
    paint_point_sources,
)
from .background import cxb_energy_intensity, cxb_rate, foreground_rate, particle_rate
from .photons import AGN_MODES, Observation, ObservationConfig, band_mean_energy_keV, observe
from .pointings import Pointings, exposure_maps, grid_pointings, off_axis_arcmin, pixel_centres_arcmin
from .psf import (
    convolve,
    encircled_energy,
    half_energy_diameter_arcsec,
    king_parameters,
    king_profile,
    psf_kernel,
)
from .vignetting import FOV_RADIUS_ARCMIN, vignetting
from .blends import BlendFit, BlendSettings, fit_blend, poisson_amplitudes
from .classes import C1, C2, ClassCuts, classify
from .confusion import Confusion, agn_confusion
from .detection import Detection, DetectionSettings, detect, estimate_background
from .measure import FitSettings, MeasuredCatalogue, SourceModel, measure_catalogue, measure_two_pass, refine_catalogue
from .selection import (
    SelectionTable,
    build_selection_table,
    inject_and_recover,
    load_selection_table,
    selection_figure,
    selection_probability,
)

__all__ = [
    "MM83_TABLE", "NH_XXL_NORTH_CM2", "band_transmission", "cross_section_cm2",
    "power_law_photon_spectrum", "thermal_photon_spectrum", "transmission",
    "MORETTI03_SOFT", "AGNCatalogue", "draw_agn", "energy_conversion_factor", "expected_number",
    "flux_above", "n_above", "paint_point_sources",
    "cxb_energy_intensity", "cxb_rate", "foreground_rate", "particle_rate",
    "AGN_MODES", "Observation", "ObservationConfig", "band_mean_energy_keV", "observe",
    "Pointings", "exposure_maps", "grid_pointings", "off_axis_arcmin", "pixel_centres_arcmin",
    "convolve", "encircled_energy", "half_energy_diameter_arcsec", "king_parameters", "king_profile", "psf_kernel",
    "FOV_RADIUS_ARCMIN", "vignetting",
    "BlendFit", "BlendSettings", "fit_blend", "poisson_amplitudes",
    "C1", "C2", "ClassCuts", "classify", "Confusion", "agn_confusion", "Detection", "DetectionSettings", "detect", "estimate_background",
    "FitSettings", "MeasuredCatalogue", "SourceModel", "measure_catalogue", "measure_two_pass", "refine_catalogue",
    "SelectionTable", "build_selection_table", "inject_and_recover", "load_selection_table", "selection_figure",
    "selection_probability",
]  # fmt: skip
