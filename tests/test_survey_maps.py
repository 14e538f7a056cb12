"""Maps: flux conservation of the resampling, Compton-y of a uniform slab by hand, cold gas, gradients.

References are independent of the code under test: a brute-force
supersampled remap (numpy), astropy's physical constants, and central
finite differences.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u

from jaxcluster.baryons import ExtendedLDL
from jaxcluster.baryons.train import mean_electron_density
from jaxcluster.analytic import XODBinning
from jaxcluster.cosmology import Cosmology
from jaxcluster.params import ThetaSim
from jaxcluster.survey import LightconeGeometry, box_layout, measure_sources, segment_components, soft_xod
from jaxcluster.survey.maps import box_maps, compton_y_columns, resample, resampling_weights, voxel_count_rates
from jaxcluster.xray import count_rate, default_emissivity_table

GEOM = LightconeGeometry(area_deg2=4.0, cell_size=0.39, omega_m_min=0.3, omega_m_max=0.3)  # 119² × 220, 120² px


def _inside_cells(geom, chi):
    """Mask of transverse cells wholly inside the footprint at χ."""
    edges = (np.arange(geom.n_perp + 1) - 0.5 * geom.n_perp) * geom.cell_size
    half = 0.5 * geom.side_rad * chi
    ok = (edges[:-1] >= -half) & (edges[1:] <= half)
    return ok[:, None] & ok[None, :]


@pytest.mark.parametrize("box", [0, 6, 11])
def test_resampling_conserves_flux(box):
    chi = float(box_layout(Cosmology(Omega_m=0.3), GEOM).chi[box])
    rng = np.random.default_rng(box)
    cols = rng.lognormal(size=(GEOM.n_perp, GEOM.n_perp, 2))
    cols_in = cols * _inside_cells(GEOM, chi)[..., None]
    flux_w, _ = resampling_weights(chi, GEOM)
    out = np.asarray(resample(jnp.asarray(cols_in), flux_w))
    # cells wholly inside the footprint: every bit of their flux lands in some pixel (round-off only)
    np.testing.assert_allclose(out.sum(axis=(0, 1)), cols_in.sum(axis=(0, 1)), rtol=1e-12)
    # against a brute-force remap: each cell cut into K² subcells dropped at ξ = x / χ
    K = 8
    sub = (np.arange(GEOM.n_perp * K) + 0.5) / K - 0.5 * GEOM.n_perp
    xi = sub * GEOM.cell_size / chi
    edges = (np.arange(GEOM.n_pix + 1) - 0.5 * GEOM.n_pix) * GEOM.pixel_rad
    w = np.repeat(np.repeat(cols_in[..., 0], K, 0), K, 1) / K**2
    X, Y = np.meshgrid(xi, xi, indexing="ij")
    ref, _, _ = np.histogram2d(X.ravel(), Y.ravel(), bins=[edges, edges], weights=w.ravel())
    full = out[..., 0]
    # subcell quantisation: pixel totals agree to the flux of a sub-cell strip, ~1/K of a cell per edge
    assert np.abs(full - ref).max() <= 2.0 / K * cols[..., 0].max() * (GEOM.cell_size / (GEOM.pixel_rad * chi)) + 1e-12
    np.testing.assert_allclose(full.sum(), ref.sum(), rtol=1e-12)


def test_compton_y_of_a_uniform_slab_by_hand():
    z, depth, h = 0.3, 50.0, 0.6711
    n_e_com, T = 2e-4, 5.0  # comoving cm⁻³, keV
    nz = 200
    cell = 0.39
    w = np.clip(depth / cell - np.arange(nz), 0.0, 1.0)
    y = compton_y_columns(jnp.full((3, 3, nz), n_e_com), jnp.full((3, 3, nz), T), jnp.asarray(w), z, cell, h)
    # by hand: y = σ_T/(m_e c²) n_e,phys kT L_phys, n_e,phys = n_e,com (1+z)³, L_phys = depth Mpc/h / (1+z)
    n_phys = n_e_com * (1 + z) ** 3 / u.cm**3
    L_phys = (depth / h * u.Mpc) / (1 + z)
    y_ref = (const.sigma_T / (const.m_e * const.c**2) * n_phys * (T * u.keV) * L_phys).to_value(u.dimensionless_unscaled)
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-8)  # CODATA 2018 on both sides
    # y is intensive: pixels fully inside a uniform column field keep the value
    geom = LightconeGeometry(area_deg2=1.0, cell_size=cell, omega_m_min=0.3, omega_m_max=0.3)
    _, mean_w = resampling_weights(400.0, geom)
    ymap = resample(jnp.full((geom.n_perp, geom.n_perp), float(y[0, 0])), mean_w)
    np.testing.assert_allclose(np.asarray(ymap), float(y[0, 0]), rtol=1e-12)


def test_gas_colder_than_the_table_does_not_emit():
    table = default_emissivity_table()
    cosmo = Cosmology()
    T = jnp.array([0.0, 1e-3, 0.05, 0.0999, 0.1, 0.5, 4.0])
    n_e = jnp.full(T.shape, 1e-4)
    cr = np.asarray(voxel_count_rates(table, n_e, T, 0.2, 0.39**3, cosmo))
    assert np.all(cr[:4] == 0.0)
    ref = np.asarray(count_rate(table, n_e[4:], T[4:], 0.2, 0.39**3, cosmo))
    np.testing.assert_allclose(cr[4:], ref, rtol=1e-12)
    assert np.all(cr[4:] > 0)


GEOM_BOX = LightconeGeometry(area_deg2=0.3, n_boxes=40, cell_size=0.39, pixel_arcmin=0.5, omega_m_min=0.25,
                             omega_m_max=0.35)  # 33 × 33 × 68 voxels, 33² pixels
BOX = 20  # which of the 40 boxes
# The near-identity eLDL (n_e = n̄_e (1 + δ), T = (1 + δ) keV): independent of the shipped weights,
# which are retrained, and hot wherever matter is, so every step of the maps is exercised.
ELDL = ExtendedLDL.init(jax.random.key(0))


def _lattice(geom):
    shape = geom.mesh_shape
    q = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * geom.cell_size for n in shape], indexing="ij"), -1)
    return q.reshape(-1, 3)


def _clumps(geom, seed, n_clumps=4, frac=0.05, sigma=0.3):
    """A lattice with `frac` of the particles moved into each of a few compact Gaussian clumps (cluster-like peaks).

    The clumps sit inside the footprint and the box depth, so they are seen.
    """
    q = _lattice(geom)
    rng = np.random.default_rng(seed)
    box = np.asarray(geom.box_size)
    per = int(frac * q.shape[0])
    idx = rng.permutation(q.shape[0])[: n_clumps * per].reshape(n_clumps, per)
    for i in range(n_clumps):
        centre = np.array([*(box[:2] / 2 + rng.uniform(-2.0, 2.0, 2)), rng.uniform(0.2, 0.8) * box[2] * 0.9])
        q[idx[i]] = centre + rng.normal(0, sigma, (idx.shape[1], 3))
    return jnp.asarray(q)


def _soft_xod_total(pos, om, seg, binning, weights, cr_min):
    """Σ w · soft XOD of box BOX of GEOM_BOX at Ω_m = om, sources measured in `seg`; aux: the maps and layout."""
    cosmo = Cosmology(Omega_m=om)
    lay = box_layout(cosmo, GEOM_BOX)
    th = ThetaSim(Omega_m=om, sigma_8=0.8)
    maps = box_maps(pos, th, lay.z[BOX], lay.chi[BOX], lay.depth, GEOM_BOX, ELDL, default_emissivity_table(), cosmo)
    cat = measure_sources(seg, maps.count_rate, GEOM_BOX, lay.z[BOX], 16)
    x = soft_xod(cat.count_rate_total, cat.hardness_ratio, cat.z, cat.valid, binning, cr_min, 0.1, 0.05)
    return jnp.sum(weights * x), (maps, lay)


def test_one_box_uniform_matter_and_soft_xod_gradient():
    """`box_maps` of one box, compiled once (positions and segmentation are arguments):

    * uniform matter: ρ/ρ_c = Ω_m(z), the mass map holds ρ̄_m × footprint × depth, and uniform
      gas (the near-identity eLDL) holds every voxel's count rate inside the cone;
    * d(soft XOD)/dΩ_m through box placement (z, χ, depth), the eLDL, count rates and the soft
      bins, against central differences. Particles are held fixed (the PM adjoint has its own
      tests in tests/nbody; the full pipeline's version is the slow test in
      test_survey_pipeline.py); the segmentation is fixed.
    """
    cr_min = 1e-7
    binning = XODBinning(np.geomspace(cr_min, 1.0, 6), np.geomspace(0.05, 20, 5), np.linspace(0.01, 2.0, 3))
    weights = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, binning.shape))
    vg = jax.jit(jax.value_and_grad(partial(_soft_xod_total, binning=binning, weights=weights, cr_min=cr_min),
                                    argnums=1, has_aux=True))
    no_sources = jnp.zeros((GEOM_BOX.n_pix, GEOM_BOX.n_pix), jnp.int32)

    # uniform matter
    (_, (maps, lay)), _ = vg(jnp.asarray(_lattice(GEOM_BOX)), jnp.asarray(0.3), no_sources)
    z, chi = float(lay.z[BOX]), float(lay.chi[BOX])
    om_z = 0.3 * (1 + z) ** 3 / (0.3 * (1 + z) ** 3 + 0.7)
    np.testing.assert_allclose(np.asarray(maps.rho_over_rho_c), om_z, rtol=1e-10)
    area = (GEOM_BOX.side_rad * chi) ** 2
    np.testing.assert_allclose(float(maps.mass.sum()), 0.3 * 2.77536627e11 * area * float(lay.depth), rtol=1e-10)
    cr_vox = count_rate(default_emissivity_table(), jnp.asarray([mean_electron_density()]), jnp.asarray([1.0]),
                        z, GEOM_BOX.cell_size**3, Cosmology(Omega_m=0.3))[0]
    n_vox = area / GEOM_BOX.cell_size**2 * float(lay.depth) / GEOM_BOX.cell_size
    np.testing.assert_allclose(np.asarray(maps.count_rate.sum(axis=(0, 1))), np.asarray(cr_vox) * n_vox, rtol=1e-6)

    # clumps: detect at Ω_m = 0.3, then hold the segmentation fixed
    pos = _clumps(GEOM_BOX, 0)
    (_, (maps0, _)), _ = vg(pos, jnp.asarray(0.3), no_sources)
    img = np.asarray(maps0.count_rate.sum(-1))
    seg = segment_components(jnp.asarray(img), 0.15 * img.max(), 2, 16)
    assert int(seg.max()) >= 2
    om0, eps = 0.3, 1e-4
    (v0, _), g = vg(pos, jnp.asarray(om0), seg)
    (vp, _), _ = vg(pos, jnp.asarray(om0 + eps), seg)
    (vm, _), _ = vg(pos, jnp.asarray(om0 - eps), seg)
    fd = (vp - vm) / (2 * eps)
    assert float(v0) > 0 and float(g) != 0.0
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-4)
