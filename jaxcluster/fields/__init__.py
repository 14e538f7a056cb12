"""Cluster field products (seeds 002, 003, 004): cutouts, pressure profiles, DeepSets, mass-map networks.

* `cutouts`: Compton-y, X-ray surface brightness, projected gas / dark-matter density around halos;
  global normalisation (seed 002 §3.1), splits by cluster, HDF5 writer / reader, synthetic dataset maker.
* `profiles`: GNFW pressure (Battaglia et al. 2012, Arnaud et al. 2010), NFW density, radial profiles.
* `deepsets`: rotation-equivariant DeepSets pressure model (seed 003) and its GNFW benchmark.
* `unet`, `diffusion`, `massmaps`: mass-map reconstruction (seeds 002, 004).
"""

# part A: cutouts, profiles, deepsets
from .cutouts import (
    CHANNEL_UNITS,
    CHANNELS,
    SPLITS,
    CutoutConfig,
    CutoutNormalisation,
    CutoutSet,
    bremsstrahlung_emissivity,
    denormalise,
    fit_normalisation,
    halo_cutouts,
    load_cutouts,
    make_cutout_dataset,
    normalise,
    save_cutouts,
    split_by_cluster,
)
from .profiles import (
    ARNAUD10,
    ELECTRON_PRESSURE_FRACTION,
    arnaud10_pressure,
    battaglia12_gnfw_parameters,
    battaglia12_pressure,
    compton_y_profile,
    gnfw,
    nfw_density,
    overdensity_radius,
    pressure_200c,
    radial_profile,
    spherical_Y,
)

# part B: unet, diffusion, massmaps

__all__ = [
    "CHANNELS", "CHANNEL_UNITS", "SPLITS", "CutoutConfig", "halo_cutouts", "bremsstrahlung_emissivity",
    "CutoutNormalisation", "fit_normalisation", "normalise", "denormalise", "split_by_cluster",
    "CutoutSet", "save_cutouts", "load_cutouts", "make_cutout_dataset",
    "gnfw", "overdensity_radius", "pressure_200c", "battaglia12_pressure", "battaglia12_gnfw_parameters",
    "arnaud10_pressure", "ARNAUD10", "ELECTRON_PRESSURE_FRACTION", "spherical_Y", "compton_y_profile",
    "nfw_density", "radial_profile",
]
