"""Lightcone geometry against an independent χ(z): astropy's FlatLambdaCDM (H0 = 100, no radiation).

Our background has no radiation, so astropy is run with Tcmb0 = 0; with
H0 = 100 km s⁻¹ Mpc⁻¹ its Mpc are our h⁻¹ Mpc. Tolerances: both sides
integrate to ≲ 1e-10 relative; 1e-8 leaves room for astropy's quadrature
tolerance, and z_at_value's root-finding tolerance (≈1e-8).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM, z_at_value

from jaxcluster.cosmology import Cosmology, comoving_distance
from jaxcluster.survey import LightconeGeometry, box_layout, los_weights, redshift_at_distance
from jaxcluster.survey.maps import resampling_weights


def _astropy(om):
    return FlatLambdaCDM(H0=100.0, Om0=om, Tcmb0=0.0)


@pytest.mark.parametrize("om", [0.1, 0.3, 0.5])
def test_box_layout_matches_astropy(om):
    geom = LightconeGeometry(area_deg2=20.0)
    lay = box_layout(Cosmology(Omega_m=om), geom)
    ref = _astropy(om)
    chi_lo, chi_hi = ref.comoving_distance([0.1, 0.5]).to_value(u.Mpc)
    edges = chi_lo + np.arange(13) * (chi_hi - chi_lo) / 12
    np.testing.assert_allclose(np.asarray(lay.chi_edges), edges, rtol=1e-8)
    np.testing.assert_allclose(float(lay.depth), (chi_hi - chi_lo) / 12, rtol=1e-8)
    centres = 0.5 * (edges[1:] + edges[:-1])
    z_ref = [z_at_value(ref.comoving_distance, c * u.Mpc, zmin=0.05, zmax=0.6, ztol=1e-12).value for c in centres]
    np.testing.assert_allclose(np.asarray(lay.z), z_ref, rtol=0, atol=1e-8)
    # the boxes tile [z_min, z_max]: first face at z = 0.1, last at 0.5
    z_faces = redshift_at_distance(Cosmology(Omega_m=om), lay.chi_edges[jnp.array([0, 12])])
    np.testing.assert_allclose(np.asarray(z_faces), [0.1, 0.5], atol=1e-10)


def test_depth_changes_with_omega_m_and_padded_mesh_holds_every_box():
    """Seed 001 Fig. 4: lower Ω_m, deeper boxes. The mesh is sized for omega_m_min and is tight."""
    geom = LightconeGeometry(area_deg2=20.0)
    depths, widths = [], []
    for om in np.linspace(0.1, 0.5, 9):
        ref = _astropy(float(om))
        chi_lo, chi_hi = ref.comoving_distance([0.1, 0.5]).to_value(u.Mpc)
        depths.append((chi_hi - chi_lo) / 12)
        widths.append(math.radians(math.sqrt(20.0)) * chi_hi)  # cone width at the far face
    assert np.all(np.diff(depths) < 0) and depths[0] / depths[-1] > 1.15
    L_perp, _, L_par = geom.box_size
    assert L_par >= max(depths) > L_par - geom.cell_size  # holds the deepest box, wastes < 1 cell
    assert L_perp >= max(widths) > L_perp - geom.cell_size  # the cone at its widest fits transversely
    # the cone intersects every box inside the box: footprint width θ χ ≤ L⊥ at each box's far face
    lay = box_layout(Cosmology(Omega_m=0.5), geom)
    assert np.all(geom.side_rad * np.asarray(lay.chi_edges) <= L_perp)


def test_los_weights_sum_to_true_depth_and_are_differentiable():
    geom = LightconeGeometry(area_deg2=1.0, n_boxes=12, cell_size=0.39)

    def n_cells(om):
        return jnp.sum(los_weights(box_layout(Cosmology(Omega_m=om), geom).depth, geom))

    for om in (0.1, 0.2345, 0.5):
        depth = float(box_layout(Cosmology(Omega_m=om), geom).depth)
        np.testing.assert_allclose(float(n_cells(om)), depth / geom.cell_size, rtol=1e-12)
    om, eps = 0.3, 1e-6
    fd = (n_cells(om + eps) - n_cells(om - eps)) / (2 * eps)
    np.testing.assert_allclose(float(jax.grad(n_cells)(om)), float(fd), rtol=1e-6)


def test_redshift_at_distance_inverts_comoving_distance():
    cosmo = Cosmology(Omega_m=0.27)
    z = jnp.linspace(0.01, 3.0, 50)
    np.testing.assert_allclose(np.asarray(redshift_at_distance(cosmo, comoving_distance(cosmo, z))), np.asarray(z), atol=1e-11)


def test_footprint_resampling_covers_the_cone_only():
    """At distance χ the pixel grid spans θ_side χ transversely: the weights cover exactly that."""
    geom = LightconeGeometry(area_deg2=4.0, cell_size=0.39, omega_m_min=0.3, omega_m_max=0.3)
    lay = box_layout(Cosmology(Omega_m=0.3), geom)
    for chi in np.asarray(lay.chi)[[0, 5, 11]]:
        flux_w, mean_w = resampling_weights(chi, geom)
        # comoving length covered by the pixels, from the cell fractions: Σ_p Σ_c F Δ = θ χ
        np.testing.assert_allclose(float(jnp.sum(flux_w)) * geom.cell_size, geom.side_rad * chi, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(jnp.sum(mean_w, axis=1)), 1.0, rtol=1e-10)  # every pixel fully covered


def test_geometry_errors_name_the_parameter():
    for kwargs, name in [(dict(area_deg2=0.0), "area_deg2"), (dict(area_deg2=1e4), "area_deg2"),
                         (dict(z_max=5.0), "z_max"), (dict(n_boxes=2.5), "n_boxes"),
                         (dict(pixel_arcmin=-1.0), "pixel_arcmin"), (dict(omega_m_min=0.0), "omega_m_min"),
                         (dict(omega_m_min=0.4, omega_m_max=0.3), "omega_m_max")]:
        with pytest.raises(ValueError, match=name):
            LightconeGeometry(**kwargs)
