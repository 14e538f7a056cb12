"""Cluster field products (seeds 002, 003, 004): cutouts, pressure profiles, DeepSets, mass-map networks.

* `cutouts`: Compton-y, X-ray surface brightness, projected gas / dark-matter density around halos;
  global normalisation (seed 002 §3.1), splits by cluster, HDF5 writer / reader, synthetic dataset maker.
* `profiles`: GNFW pressure (Battaglia et al. 2012, Arnaud et al. 2010), NFW density, radial profiles.
* `deepsets`: rotation-equivariant DeepSets pressure model (seed 003) and its GNFW benchmark.
* `unet`, `diffusion`, `massmaps`: mass-map reconstruction (seeds 002, 004).
"""

# cutouts, profiles, the DeepSets pressure model
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
    write_cutout_dataset,
    split_by_cluster,
)
from .deepsets import (
    MODULE_LABELS,
    FeatureMLP,
    GNFWProfile,
    HaloSample,
    LocalModule,
    OriginModule,
    PressureDeepSets,
    StochasticModule,
    cluster_frame,
    fit_pressure_model,
    halo_samples,
    loss_ratio_median,
    module_labels,
    neighbour_gaps,
    pressure_optimizer,
    reconstruction_loss,
    rotate_frame_vectors,
    scalar_noise,
    scalar_statistics,
    shell_means,
    training_loss,
    vector_rotation_noise,
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

# mass-map reconstruction and its metrics
from .diffusion import (
    NCSNpp,
    VESDE,
    ConditionedScore,
    GaussianScore,
    ScoreModel,
    diffrax_sde,
    dsm_loss,
    euler_maruyama,
    posterior_mean,
    posterior_samples,
    predictor_corrector,
    probability_flow,
)
from .massmaps import (
    azimuthal_profile,
    bias_k,
    cross_correlation_k,
    cross_power_spectrum_2d,
    maximum_mean_discrepancy,
    pixel_relative_difference,
    power_ratio,
    power_spectrum_2d,
    radial_mass_bias,
    radial_profile_fractional_error,
    standardised_pixel_errors,
    total_mass_fractional_error,
)
from .training import FitConfig, FitResult, fit
from .unet import MultiViewUNet, random_view_mask, unet_loss

__all__ = [
    "CHANNELS", "CHANNEL_UNITS", "SPLITS", "CutoutConfig", "halo_cutouts", "bremsstrahlung_emissivity",
    "CutoutNormalisation", "fit_normalisation", "normalise", "denormalise", "split_by_cluster",
    "CutoutSet", "save_cutouts", "write_cutout_dataset", "load_cutouts", "make_cutout_dataset",
    "gnfw", "overdensity_radius", "pressure_200c", "battaglia12_pressure", "battaglia12_gnfw_parameters",
    "arnaud10_pressure", "ARNAUD10", "ELECTRON_PRESSURE_FRACTION", "spherical_Y", "compton_y_profile",
    "nfw_density", "radial_profile",
    "HaloSample", "cluster_frame", "GNFWProfile", "OriginModule", "LocalModule", "StochasticModule",
    "PressureDeepSets", "reconstruction_loss", "training_loss", "loss_ratio_median", "halo_samples",
    "scalar_statistics", "neighbour_gaps", "scalar_noise",
    "FeatureMLP", "rotate_frame_vectors", "vector_rotation_noise", "MODULE_LABELS", "module_labels", "shell_means",
    "pressure_optimizer",
    "fit_pressure_model",
    "MultiViewUNet", "random_view_mask", "unet_loss", "FitConfig", "FitResult", "fit",
    "VESDE", "NCSNpp", "ScoreModel", "ConditionedScore", "GaussianScore", "dsm_loss", "euler_maruyama",
    "predictor_corrector", "probability_flow", "diffrax_sde", "posterior_samples", "posterior_mean",
    "pixel_relative_difference", "azimuthal_profile", "radial_profile_fractional_error", "radial_mass_bias",
    "total_mass_fractional_error", "standardised_pixel_errors", "power_spectrum_2d", "cross_power_spectrum_2d",
    "bias_k", "cross_correlation_k", "power_ratio", "maximum_mean_discrepancy",
]
