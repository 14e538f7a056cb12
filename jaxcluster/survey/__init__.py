"""Survey forward model (seed 001 §2.3): lightcones, mock X-ray / y / mass maps, detection, the XOD.

* `lightcone`: N boxes of equal comoving size along the line of sight; padded mesh + depth mask.
* `maps`: count rates (2 bands), Compton-y and matter maps, projected and resampled to pixels.
* `detect`: sep through `jax.pure_callback`, source measurement (hard masks, soft isophotes), the `Catalogue`.
* `components`: a JAX-native detector (connected components by label propagation).
* `xod`: hard and soft (differentiable) X-ray observable diagrams.
* `pipeline`: `SurveyConfig`, `simulate_survey`, `simulate_xod`, `simulate_xod_batch`.
"""

from .components import label_components, match_catalogues, segment_components
from .detect import (
    DETECTORS,
    Catalogue,
    DetectionConfig,
    dilate_labels,
    isophote_weights,
    measure_sources,
    relabel_by_flux,
    segment,
    segment_sep,
)
from .lightcone import BoxLayout, LightconeGeometry, box_layout, los_weights, redshift_at_distance
from .maps import (
    BoxMaps,
    box_maps,
    compton_y_columns,
    overlap_lengths,
    resample,
    resampling_weights,
    voxel_count_rates,
)
from .pipeline import (
    SurveyConfig,
    SurveyResult,
    box_fields,
    box_keys,
    box_particles,
    seed001_survey,
    simulate_box,
    simulate_survey,
    simulate_xod,
    simulate_xod_batch,
    survey_xods,
)
from .xod import XODBinning, hard_xod, measured_xod, soft_bin_weights, soft_xod

__all__ = [
    "LightconeGeometry", "BoxLayout", "box_layout", "los_weights", "redshift_at_distance",
    "BoxMaps", "box_maps", "voxel_count_rates", "compton_y_columns", "overlap_lengths", "resampling_weights", "resample",
    "DETECTORS", "DetectionConfig", "Catalogue", "segment", "segment_sep", "measure_sources", "relabel_by_flux",
    "dilate_labels", "isophote_weights",
    "label_components", "segment_components", "match_catalogues",
    "XODBinning", "hard_xod", "soft_xod", "soft_bin_weights", "measured_xod",
    "SurveyConfig", "SurveyResult", "simulate_box", "box_particles", "box_fields", "box_keys", "survey_xods", "simulate_survey", "simulate_xod", "simulate_xod_batch", "seed001_survey",
]
