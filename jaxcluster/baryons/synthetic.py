r"""A synthetic hydrodynamics model: (n_e, T) on the mesh from dark matter, halos, θ_sim, z and a key.

**Synthetic**: it stands in for CAMELS/IllustrisTNG in tests, examples and the
shipped default weights; results on it are never reproductions of seed 001's
numbers. The equations, sources and the calibration are in
`docs/pipeline/synthetic.md`; in brief:

* **Diffuse gas** follows the dark matter smoothed by a Gaussian of
  `smoothing` h⁻¹ Mpc (gas pressure), $n_e = \bar n_e (1 + δ_s)$, with a
  photo-ionised IGM $T = T_0 (1+δ_s)^{γ-1}$ blending into a shock-heated
  warm-hot phase $T_{sh} = T_{sh,0} ((1+δ_s)/100)^{2/3}$ above 1 + δ_s ≈ 10.
* **Halo gas** (halos with M_200c ≥ `min_mass`): Battaglia (2016) density and
  Battaglia et al. (2012) pressure, T = P / n (`baryons.icm`), replacing the
  diffuse gas inside R_200c and tapering to it by `x_trunc` R_200c.
* **Feedback** acts through smooth functions of ln A: a gas-depletion mass
  scale $\ln M_c = \ln M_{c,0} + \sum_i c_i \ln A_i$ removes gas from the
  cores of halos below M_c, and core heating multiplies T; the SN
  coefficients are larger than the AGN ones (seed 001 §5.4).
* **Tracing**: halo gas follows the dark matter's departures from a smooth
  NFW halo, $n_e \to n_e\,(\tilde ρ_{DM} / \tilde ρ_{NFW})^{β_{tr}}$ with both
  fields smoothed over `trace_smoothing`, renormalised per halo so each
  halo keeps its gas mass: substructure, mergers and asphericity clump the
  gas and raise L_X, as in hydrodynamical runs.
* **Scatter** per halo: a core-density deviate (cool core vs disturbed),
  mostly tied to the halo's dark matter (centre offset and infall-shell mass
  from the halo finder) and partly random, plus small random gas-fraction and
  temperature deviates. With the tracing, most of the scatter of the
  clusters' L_X at fixed mass is set by their dark matter, as it is in
  hydrodynamical simulations run from given initial conditions.

Units: comoving n_e [cm⁻³] and mass-weighted T [keV] on the comoving mesh.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, E
from ..halos.nfw import concentration_duffy08, nfw_mu
from ..halos.so import HaloCatalogue
from ..io.snapshots import MPC_CM, PROTON_MASS_G, SOLAR_MASS_G
from ..nbody.mesh import paint_cic, rfft_wavevectors
from ..params import ThetaSim
from .icm import MU_E, battaglia16_density, gnfw_temperature_keV

__all__ = ["SyntheticGasModel", "SyntheticGas", "HaloDeviates", "synthetic_gas", "halo_deviates", "halo_gas_profile"]

_K_B_KEV_PER_K = 8.617333262e-8
# ρ [h² M☉ Mpc⁻³] → n_e [cm⁻³] needs h², M☉ in grams, Mpc in cm and μ_e m_p.
_RHO_TO_NE = SOLAR_MASS_G / MPC_CM**3 / (MU_E * PROTON_MASS_G)
_HALO_BATCH = 8  # halos whose profiles are evaluated at once (memory)


class SyntheticGasModel(eqx.Module):
    """Parameters of the synthetic gas model (all documented in docs/pipeline/synthetic.md).

    The defaults are the fiducial model, calibrated so its clusters follow
    observed T–M and L_X–M relations within 30 % (see the docs page).
    All fields are plain floats (differentiable leaves).
    """

    # Diffuse gas
    smoothing: float = 0.25  # Gaussian σ of the gas smoothing [h⁻¹ Mpc, comoving]
    T_igm_K: float = 8e3  # IGM temperature at mean density [K]
    gamma_igm: float = 1.55  # slope γ of T ∝ (1+δ)^(γ−1)
    T_shock_K: float = 1e6  # warm-hot phase temperature at 1 + δ = 100 [K]
    delta_shock: float = 10.0  # 1 + δ at which half the diffuse gas is shock-heated
    # Halos
    min_mass: float = 10**12.5  # smallest M_200c painted with a profile [h⁻¹ M☉]
    x_trunc: float = 2.0  # profiles taper to the diffuse gas between R_200c and x_trunc R_200c
    # Calibration to observed T–M and L_X–M (docs/pipeline/synthetic.md)
    n_norm: float = 0.88  # multiplies the Battaglia (2016) gas density
    T_norm: float = 1.15  # multiplies the Battaglia (2012) P / n temperature
    # Feedback: ln M_c = ln M_c0 + Σ c_i ln A_i, depletion f = 1 / (1 + (M_c/M)^β)
    ln_Mc0: float = math.log(10**13.3)  # [h⁻¹ M☉]
    beta_dep: float = 0.8
    c_SN1: float = 0.8
    c_SN2: float = -0.7
    c_AGN1: float = 0.15
    c_AGN2: float = 0.06
    x_eject: float = 0.5  # depletion acts inside ~x_eject R_200c
    # Core heating: ln T_core += Σ h_i ln A_i (inside ~0.3 R_200c); diffuse: ln T_sh += Σ w_i ln A_i
    h_SN1: float = 0.06
    h_SN2: float = -0.03
    h_AGN1: float = 0.04
    h_AGN2: float = 0.03
    w_SN1: float = 0.05
    w_AGN1: float = 0.08
    w_AGN2: float = 0.04
    # Per-halo scatter (ln units)
    sigma_core_env: float = 0.5  # core-density deviate tied to the halo's dark matter
    sigma_core_random: float = 0.15  # core-density deviate, random
    sigma_fgas: float = 0.05  # gas-fraction deviate, random
    sigma_T: float = 0.05  # temperature deviate, random
    x_core: float = 0.1  # core scale of the core deviate [R_200c]
    # Gas tracing the dark matter's departures from NFW (0 switches it off)
    beta_trace: float = 0.5
    trace_smoothing: float = 0.5  # Gaussian σ of both fields in the ratio [h⁻¹ Mpc, comoving]
    trace_clip: float = 3.0  # the ratio is clipped to [1/trace_clip, trace_clip]


class HaloDeviates(eqx.Module):
    """Per-halo scatter in ln units: core density, gas fraction, temperature (each (n_halo,))."""

    core: Float[Array, " n_halo"]
    fgas: Float[Array, " n_halo"]
    T: Float[Array, " n_halo"]


class SyntheticGas(eqx.Module):
    """The model's output on the mesh.

    Attributes:
        n_e: comoving electron density [cm⁻³].
        T_keV: mass-weighted temperature [keV].
        halo_weight: fraction of each voxel's gas given by halo profiles (0–1).
    """

    n_e: Float[Array, "nx ny nz"]
    T_keV: Float[Array, "nx ny nz"]
    halo_weight: Float[Array, "nx ny nz"]


def _ln_A(theta: ThetaSim, dtype):
    return {k: jnp.log(jnp.asarray(getattr(theta, k), dtype=dtype)) for k in ("A_SN1", "A_SN2", "A_AGN1", "A_AGN2")}


def _environment_score(halos: HaloCatalogue, dtype):
    """Standardised 'relaxedness' from the halo's dark matter: centred and quiet → positive.

    Two proxies from the halo finder, each standardised with reference points
    measured on PM halos at 0.39 h⁻¹ Mpc and clipped to ±3: the centre offset
    (ln(offset + 0.01), median ln 0.06, spread 0.5) and the infall-shell mass
    (median 0.7, spread 0.3). M_500c/M_200c is not used: at that resolution it
    is set by the force softening for group-scale halos, not by their assembly.
    """
    z_o = jnp.clip((jnp.log(halos.offset.astype(dtype) + 0.01) - math.log(0.06)) / 0.5, -3.0, 3.0)
    z_i = jnp.clip((halos.infall.astype(dtype) - 0.7) / 0.3, -3.0, 3.0)
    return -(z_o + z_i) / math.sqrt(2.0)


def halo_deviates(model: SyntheticGasModel, halos: HaloCatalogue, key: PRNGKeyArray, dtype=None) -> HaloDeviates:
    """Draw the per-halo scatter: the core deviate mixes the environment score and a Gaussian."""
    dtype = dtype or halos.M200c.dtype
    n = halos.M200c.shape[0]
    k_core, k_f, k_T = jax.random.split(key, 3)
    core = model.sigma_core_env * _environment_score(halos, dtype) + model.sigma_core_random * jax.random.normal(
        k_core, (n,), dtype=dtype
    )
    return HaloDeviates(
        core=core,
        fgas=model.sigma_fgas * jax.random.normal(k_f, (n,), dtype=dtype),
        T=model.sigma_T * jax.random.normal(k_T, (n,), dtype=dtype),
    )


def _depletion(model, M200c, lnA):
    """Gas depletion relative to the fiducial feedback, f(θ) / f(fid), for masses M_200c [h⁻¹ M☉]."""
    ln_Mc = model.ln_Mc0 + model.c_SN1 * lnA["A_SN1"] + model.c_SN2 * lnA["A_SN2"]
    ln_Mc = ln_Mc + model.c_AGN1 * lnA["A_AGN1"] + model.c_AGN2 * lnA["A_AGN2"]
    ln_M = jnp.log(M200c)
    return (1.0 + jnp.exp(model.beta_dep * (model.ln_Mc0 - ln_M))) / (1.0 + jnp.exp(model.beta_dep * (ln_Mc - ln_M)))


def _core_heating(model, lnA):
    return (
        model.h_SN1 * lnA["A_SN1"] + model.h_SN2 * lnA["A_SN2"] + model.h_AGN1 * lnA["A_AGN1"] + model.h_AGN2 * lnA["A_AGN2"]
    )


def halo_gas_profile(
    model: SyntheticGasModel,
    x: Float[ArrayLike, "*x"],
    M200c: Float[ArrayLike, ""],
    R200c: Float[ArrayLike, ""],
    cosmo: Cosmology,
    theta: ThetaSim,
    z: Float[ArrayLike, ""],
    deviates: tuple = (0.0, 0.0, 0.0),
) -> tuple[Float[Array, "*x"], Float[Array, "*x"]]:
    r"""Electron density and temperature of one halo's gas at x = r / R_200c (untapered).

    Args:
        model: model parameters.
        x: radii in units of R_200c (> 0).
        M200c: halo mass [h⁻¹ M☉].
        R200c: *comoving* R_200c [h⁻¹ Mpc].
        cosmo: cosmology (h, Ω_b / Ω_m, ρ_c(z)).
        theta: θ_sim (feedback amplitudes).
        z: redshift.
        deviates: (core, fgas, T) ln-deviates of this halo (`halo_deviates`).

    Returns:
        (n_e comoving [cm⁻³], T [keV]), each of x's shape.
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    h = cosmo.h.astype(dtype)
    z = jnp.asarray(z, dtype=dtype)
    a = 1.0 / (1.0 + z)
    M_sun = jnp.asarray(M200c, dtype=dtype) / h
    R_phys_Mpc = a * jnp.asarray(R200c, dtype=dtype) / h
    lnA = _ln_A(theta, dtype)
    d_core, d_fgas, d_T = (jnp.asarray(d, dtype=dtype) for d in deviates)
    x = jnp.maximum(x, 1e-3)
    rho_crit_z = RHO_CRIT0_MSUN_H2_MPC3 * E(cosmo, a.astype(cosmo.Omega_m.dtype)).astype(dtype) ** 2  # h² M☉ Mpc⁻³
    f_b = (cosmo.Omega_b / cosmo.Omega_m).astype(dtype)
    core = 1.0 / (1.0 + (x / model.x_core) ** 2)
    inner = 1.0 / (1.0 + (x / model.x_eject) ** 2)
    depletion = _depletion(model, jnp.asarray(M200c, dtype=dtype), lnA) ** inner
    rho_gas = model.n_norm * f_b * rho_crit_z * battaglia16_density(x, M_sun, z) * depletion * jnp.exp(d_fgas + d_core * core)
    n_e = rho_gas * h**2 * a**3 * _RHO_TO_NE  # physical → comoving
    heating = _core_heating(model, lnA) / (1.0 + (x / 0.3) ** 2)
    # A denser (cool) core is also cooler: half the density deviate comes off ln T.
    T = model.T_norm * gnfw_temperature_keV(x, M_sun, R_phys_Mpc, z) * jnp.exp(d_T + heating - 0.5 * d_core * core)
    return n_e, T


def _diffuse_temperature_keV(model, one_plus_delta, lnA):
    T_igm = model.T_igm_K * one_plus_delta ** (model.gamma_igm - 1.0)
    T_sh = model.T_shock_K * (one_plus_delta / 100.0) ** (2.0 / 3.0)
    T_sh = T_sh * jnp.exp(model.w_SN1 * lnA["A_SN1"] + model.w_AGN1 * lnA["A_AGN1"] + model.w_AGN2 * lnA["A_AGN2"])
    shocked = jax.nn.sigmoid((jnp.log(one_plus_delta) - math.log(model.delta_shock)) / 0.5)
    return ((1.0 - shocked) * T_igm + shocked * T_sh) * _K_B_KEV_PER_K


def _taper(x, x_trunc):
    """1 inside R_200c, a half cosine to 0 at x_trunc."""
    t = jnp.clip((x - 1.0) / (x_trunc - 1.0), 0.0, 1.0)
    return 0.5 * (1.0 + jnp.cos(math.pi * t))


def synthetic_gas(
    pos: Float[Array, "n_ptcl 3"],
    halos: HaloCatalogue,
    theta: ThetaSim,
    z: float | Float[Array, ""],
    key: PRNGKeyArray,
    box_size: tuple[float, float, float],
    mesh_shape: tuple[int, int, int],
    model: SyntheticGasModel = SyntheticGasModel(),
    *,
    cosmo: Cosmology | None = None,
    r_paint: float = 3.0,
    subsample: int = 2,
    core_subsample: int = 8,
) -> SyntheticGas:
    r"""Paint synthetic (n_e, T) on a mesh from dark-matter particles and their halos.

    Args:
        pos: (n_ptcl, 3) comoving dark-matter positions [h⁻¹ Mpc].
        halos: `find_halos` output for these particles.
        theta: θ_sim (Ω_m, σ_8 set the cosmology unless `cosmo` is given; the
            A's drive the feedback functions).
        z: redshift.
        key: PRNG key of the per-halo scatter.
        box_size: comoving box [h⁻¹ Mpc] (static).
        mesh_shape: output mesh (static), e.g. cells of 0.39 h⁻¹ Mpc.
        model: model parameters.
        cosmo: cosmology; default `Cosmology.from_theta(theta)`.
        r_paint: largest comoving radius a profile is painted to [h⁻¹ Mpc]
            (static; beyond it the diffuse gas takes over).
        subsample: profile samples per cell and axis (cell averages of n_e and n_e T).
        core_subsample: samples per cell and axis in the 3³ cells around each
            halo's centre, where the cusp and the core deviate vary within a
            cell (static; `subsample` there reproduces a single level).

    Returns:
        `SyntheticGas` with comoving n_e [cm⁻³] and mass-weighted T [keV].
    """
    box = tuple(float(b) for b in np.broadcast_to(np.asarray(box_size, dtype=float), (3,)))
    shape = tuple(int(n) for n in np.broadcast_to(np.asarray(mesh_shape), (3,)))
    if pos.ndim != 2 or pos.shape[-1] != 3:
        raise ValueError(f"pos must have shape (n_ptcl, 3), got {pos.shape}")
    if subsample < 1 or core_subsample < 1:
        raise ValueError(f"subsample = {subsample} and core_subsample = {core_subsample} must be >= 1")
    if not 0 < r_paint <= min(box) / 2:
        raise ValueError(f"r_paint = {r_paint} must lie in (0, min(box_size)/2] h⁻¹ Mpc")
    dtype = pos.dtype
    if cosmo is None:
        cosmo = Cosmology.from_theta(theta)
    z = jnp.asarray(z, dtype=dtype)
    lnA = _ln_A(theta, dtype)
    cell = jnp.asarray([b / n for b, n in zip(box, shape)], dtype=dtype)

    # Diffuse gas: smoothed dark matter.
    counts = paint_cic(pos / cell[None, :], jnp.ones(pos.shape[0], dtype=dtype), shape)
    one_plus_delta_raw = counts * (math.prod(shape) / pos.shape[0])
    kx, ky, kz = rfft_wavevectors(shape, dtype=dtype)
    k2 = (kx / cell[0]) ** 2 + (ky / cell[1]) ** 2 + (kz / cell[2]) ** 2

    def gaussian(field, sigma):
        modes = jnp.fft.rfftn(field)
        return jnp.fft.irfftn(modes * jnp.exp(-0.5 * sigma**2 * k2).astype(modes.dtype), s=shape)

    one_plus_delta = jnp.maximum(gaussian(one_plus_delta_raw, model.smoothing), 1e-3)
    h = cosmo.h.astype(dtype)
    n_e_mean = (cosmo.Omega_b.astype(dtype) * RHO_CRIT0_MSUN_H2_MPC3) * h**2 * _RHO_TO_NE
    n_diff = n_e_mean * one_plus_delta
    T_diff = _diffuse_temperature_keV(model, one_plus_delta, lnA)

    # Halo gas: profiles on a cube of cells around each halo, sub-sampled.
    dev = halo_deviates(model, halos, key, dtype)
    w = int(math.ceil(r_paint / min(b / n for b, n in zip(box, shape))))
    offs = jnp.arange(-w, w + 1, dtype=jnp.int32)
    cube = jnp.stack(jnp.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)  # (C, 3)
    shape_arr = jnp.asarray(shape, dtype=jnp.int32)
    rho_mean = cosmo.Omega_m.astype(dtype) * RHO_CRIT0_MSUN_H2_MPC3  # comoving [h² M☉ Mpc⁻³ = h⁻¹ M☉ (h⁻¹ Mpc)⁻³]
    # The 3³ central cells of the cube (row-major in `cube`), averaged over core_subsample³ points.
    near = np.asarray([((i + w) * (2 * w + 1) + (j + w)) * (2 * w + 1) + (k + w)
                       for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])

    def one_halo(centre, M200c, R200c, valid, d_core, d_fgas, d_T):
        # Voxel i is centred on the CIC node i·cell, as `paint_cic` and `voxelise_gas` assign.
        c_cell = jnp.round(centre / cell).astype(jnp.int32)
        idx = c_cell[None, :] + cube  # (C, 3)
        R = jnp.where(valid, R200c, 1.0)
        M = jnp.where(valid, M200c, 1e14)
        c = concentration_duffy08(M, z)

        def cell_means(cells, s):
            """Averages over s³ points in each of `cells` (K, 3): n_e w, n_e T w, w, ρ_NFW w."""
            u = (jnp.arange(s, dtype=dtype) + 0.5) / s - 0.5
            u = jnp.stack(jnp.meshgrid(u, u, u, indexing="ij"), -1).reshape(-1, 3)  # (S, 3) in cells
            pts = (cells.astype(dtype)[:, None, :] + u[None, :, :]) * cell[None, None, :]  # (K, S, 3)
            r = jnp.sqrt(jnp.sum((pts - centre[None, None, :]) ** 2, -1))
            x = r / R
            n_e, T = halo_gas_profile(model, x, M, R, cosmo, theta, z, (d_core, d_fgas, d_T))
            wt = jnp.where((r < r_paint) & valid, _taper(x, model.x_trunc), 0.0)
            # The smooth NFW halo the tracing compares the dark matter with, in units of the mean.
            y = jnp.maximum(c * x, 1e-2)
            rho_nfw = M * c**3 / (4.0 * math.pi * R**3 * nfw_mu(c)) / (y * (1.0 + y) ** 2) / rho_mean
            return jnp.stack([jnp.mean(n_e * wt, -1), jnp.mean(n_e * wt * T, -1), jnp.mean(wt, -1),
                              jnp.mean(rho_nfw * wt, -1)])

        means = cell_means(idx, subsample)
        if core_subsample != subsample:
            means = means.at[:, near].set(cell_means(idx[near], core_subsample))
        return (jnp.mod(idx, shape_arr[None, :]), *means)

    paint = halos.valid & (halos.M200c >= model.min_mass)
    # Halos in batches: each holds (2w+1)³ subsample³ + 3³ core_subsample³ profile samples (at
    # 0.39 h⁻¹ Mpc cells, 53,000), and a catalogue holds up to hundreds of halos.
    idx, n_h, nT_h, w_h, rho_h = jax.lax.map(
        lambda args: one_halo(*args),
        (halos.pos.astype(dtype), halos.M200c.astype(dtype), halos.R200c.astype(dtype), paint, dev.core, dev.fgas, dev.T),
        batch_size=_HALO_BATCH,
    )
    flat = (idx[..., 0] * shape[1] + idx[..., 1]) * shape[2] + idx[..., 2]  # (H, C)
    size = math.prod(shape)

    def scatter(values):
        return jnp.zeros(size, dtype=dtype).at[flat.ravel()].add(values.ravel()).reshape(shape)

    weight = jnp.minimum(scatter(w_h), 1.0)
    # Tracing: the dark matter over its smooth-NFW model, both smoothed alike, to the power β_tr,
    # then renormalised per halo so the tracing moves gas around within a halo but adds none.
    rho_model = (1.0 - weight) + scatter(rho_h)
    ratio = jnp.maximum(gaussian(one_plus_delta_raw, model.trace_smoothing), 1e-3) / jnp.maximum(
        gaussian(rho_model, model.trace_smoothing), 1e-3
    )
    ratio = jnp.clip(ratio, 1.0 / model.trace_clip, model.trace_clip) ** model.beta_trace
    t = ratio.ravel()[flat]  # (H, C)
    den = jnp.sum(n_h * t, -1, keepdims=True)
    ok = den > 0  # unpainted halos have no gas to renormalise (and must not make NaN gradients)
    t = t * jnp.where(ok, jnp.sum(n_h, -1, keepdims=True) / jnp.where(ok, den, 1.0), 1.0)
    n_halo = scatter(n_h * t)
    nT_halo = scatter(nT_h * t)

    n_e = n_diff * (1.0 - weight) + n_halo
    T = (n_diff * (1.0 - weight) * T_diff + nT_halo) / n_e
    return SyntheticGas(n_e=n_e, T_keV=T, halo_weight=weight)
