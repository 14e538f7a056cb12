"""The true halos behind detections (`survey.truth`) and the catalogue's edge flag (`survey.products`)."""

import jax.numpy as jnp
import numpy as np

from jaxcluster.baryons.ldl import paint_one_plus_delta
from jaxcluster.cosmology import Cosmology
from jaxcluster.params import ThetaSim
from jaxcluster.survey.lightcone import LightconeGeometry, box_layout, los_weights
from jaxcluster.survey.maps import resample, resampling_weights
from jaxcluster.survey.products import edge_flags, source_pixels
from jaxcluster.survey.truth import BoxHaloFinder, ProjectedHalos, match_detections

THETA = ThetaSim(0.3, 0.8, 1.0, 1.0, 1.0, 1.0)


def test_halo_projects_where_the_maps_put_its_mass():
    # a compact clump of 600 particles (4 × 10¹⁴ h⁻¹ M☉ at 2 h⁻¹ Mpc cells) in a uniform lattice: the finder's halo
    # must land on the pixel where the maps' own projection (los weights, flux-conserving resampling) puts its mass
    geom = LightconeGeometry(1.0, 0.1, 0.5, 12, 2.0, 6.0, omega_m_min=0.3, omega_m_max=0.3)
    layout = box_layout(Cosmology.from_theta(THETA), geom)
    b = 6
    chi, depth, z = float(layout.chi[b]), float(layout.depth), float(layout.z[b])
    n_perp, n_par, cell = geom.n_perp, geom.n_par, geom.cell_size
    grid = np.stack(np.meshgrid(np.arange(n_perp), np.arange(n_perp), np.arange(n_par), indexing="ij"), -1)
    pos = grid.reshape(-1, 3).astype(float) * cell
    t = np.array([3.5, -1.8])  # transverse distance from the line of sight [h⁻¹ Mpc]
    centre = np.array([t[0] + 0.5 * n_perp * cell, t[1] + 0.5 * n_perp * cell, 20.0])
    rng = np.random.default_rng(0)
    pos[:600] = centre + 0.15 * rng.standard_normal((600, 3))
    halos = BoxHaloFinder(geom, THETA)(jnp.asarray(pos), z, chi, depth)
    assert len(halos.M500c) >= 1 and 2e14 < halos.M500c[0] < 5e14
    np.testing.assert_allclose(halos.xi[0], t / chi, atol=0.05 / chi)
    rho = paint_one_plus_delta(jnp.asarray(pos), geom.box_size, geom.mesh_shape)
    cols = jnp.sum(rho * los_weights(jnp.asarray(depth), geom)[None, None, :], axis=-1)
    mass_map = np.asarray(resample(cols, resampling_weights(chi, geom)[0]))
    assert tuple(halos.pixel[0]) == np.unravel_index(np.argmax(mass_map), mass_map.shape)
    # and the detection convention agrees: the halo's ξ is inside its pixel
    p = source_pixels(halos.xi[0], geom)
    assert np.all(np.abs(p - halos.pixel[0]) <= 0.5)


def test_match_takes_the_most_massive_halo_in_the_segment():
    seg = np.zeros((8, 8), np.int32)
    seg[1:4, 1:4] = 1
    seg[5:7, 5:7] = 2
    halos = ProjectedHalos(xi=np.zeros((3, 2)), pixel=np.array([[2, 2], [1, 3], [0, 7]]),
                           M500c=np.array([3e14, 1e14, 5e13]), R500c=np.ones(3))
    np.testing.assert_array_equal(match_detections(seg, halos, 4), [0, -1, -1, -1])
    swapped = ProjectedHalos(xi=np.zeros((2, 2)), pixel=np.array([[5, 5], [6, 6]]), M500c=np.array([2e14, 1e14]),
                             R500c=np.ones(2))
    np.testing.assert_array_equal(match_detections(seg, swapped, 4), [-1, 0, -1, -1])


def test_edge_flag():
    seg = np.zeros((10, 10), np.int32)
    seg[0:2, 4:6] = 1  # touches the border
    seg[4:6, 4:6] = 2  # in the middle
    seg[7:9, 3:5] = 3  # one pixel from the border, radius 1.13 pixels
    pixels = np.array([[4.5, 0.5], [4.5, 4.5], [3.5, 7.5], [0.0, 0.0]])
    area = np.array([4.0, 4.0, 4.0, 0.0])
    np.testing.assert_array_equal(edge_flags(seg, pixels, area)[:3], [True, False, False])
    # a large source whose disc reaches the border is flagged though its segment does not touch it
    big = np.array([[4.5, 0.5], [4.5, 4.5], [3.5, 7.5], [0.0, 0.0]])
    assert edge_flags(seg, big, np.array([4.0, 4.0, 40.0, 0.0]))[2]
