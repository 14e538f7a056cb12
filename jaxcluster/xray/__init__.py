"""X-ray emission: instrument responses, emissivity tables, count rates (ARCHITECTURE §1)."""

from .countrate import (
    NE_OVER_NH,
    count_rate,
    energy_flux,
    flux_factor,
    hardness_ratio,
)
from .emissivity import (
    DEFAULT_BANDS_KEV,
    DEFAULT_ENERGY_BANDS_KEV,
    EmissivityTable,
    band_emissivity,
    band_energy_emissivity,
    build_emissivity_table,
    build_energy_table,
    default_band_response,
    default_emissivity_table,
    default_energy_table,
    load_emissivity_tables,
    save_emissivity_tables,
)
from .response import (
    BandResponse,
    Response,
    band_effective_area,
    band_response,
    read_response,
    read_responses,
    sum_responses,
)
from .spectrum import (
    AG89_ABUNDANCE,
    abundances,
    electron_to_hydrogen_ratio,
    rest_frame_spectrum,
)

__all__ = [
    "NE_OVER_NH",
    "count_rate",
    "energy_flux",
    "flux_factor",
    "hardness_ratio",
    "DEFAULT_BANDS_KEV",
    "DEFAULT_ENERGY_BANDS_KEV",
    "EmissivityTable",
    "band_emissivity",
    "band_energy_emissivity",
    "build_emissivity_table",
    "build_energy_table",
    "default_band_response",
    "default_emissivity_table",
    "default_energy_table",
    "load_emissivity_tables",
    "save_emissivity_tables",
    "BandResponse",
    "Response",
    "band_effective_area",
    "band_response",
    "read_response",
    "read_responses",
    "sum_responses",
    "AG89_ABUNDANCE",
    "abundances",
    "electron_to_hydrogen_ratio",
    "rest_frame_spectrum",
]
