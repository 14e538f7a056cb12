r"""The true halos behind the detections of one lightcone box: SO masses of the halos each source belongs to.

The survey pipeline detects sources on projected maps; the particles of each
box are the truth. `BoxHaloFinder` runs the spherical-overdensity finder
(`jaxcluster.halos.find_halos`) on a box's particles and projects the halo
centres onto the map exactly as the maps project the mesh
(`survey.maps.resampling_weights`): the mesh node at transverse coordinate x
[h⁻¹ Mpc] is at transverse distance $x − n_⊥Δ/2$ from the line of sight, so a
halo is seen at $ξ = (x − n_⊥Δ/2) / χ_b$; along the line of sight a halo
counts if the projection weight of its cell is above ½ (`los_weights`: the
maps take a cell with that weight).

`match_detections` gives each detection the **most massive halo (M_500c)
whose projected centre falls inside the detection's segment**: the segment is
the isophote that defines the source's count rate, so the halo whose gas
dominates it lies inside it; smaller halos projected onto the same segment
are ignored. A detection with no halo centre inside its segment (a blend of
filament gas, or a halo the finder did not examine: it keeps the
`max_halos` highest density peaks of the box) has no match (NaN).

Costs: the finder examines `max_halos` = 128 peaks in the particles within
`r_max` of each (3 h⁻¹ Mpc by default, so that R_200m of a 10¹⁵ h⁻¹ M☉
halo, ≈ 2.4 h⁻¹ Mpc comoving at z ≲ 0.5, stays inside it), a few seconds per
default box on a CPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..cosmology import Cosmology
from ..halos import SOFinder, find_halos
from .lightcone import LightconeGeometry

__all__ = ["MAX_HALOS", "R_MAX", "ProjectedHalos", "BoxHaloFinder", "match_detections"]

MAX_HALOS = 64  # density peaks examined per box (the highest): ~6 detections per default box, 64 peaks reach ~10¹³ h⁻¹ M☉
R_MAX = 3.0  # SO search radius [h⁻¹ Mpc comoving] (module docstring)


class ProjectedHalos(NamedTuple):
    """The halos of one box inside its map footprint, most massive (M_500c) first.

    Attributes:
        xi: (n, 2) projected centres, tangent-plane (ξ_x, ξ_y) [rad].
        pixel: (n, 2) int map pixel (ξ_x index, ξ_y index) of each centre.
        M500c: (n,) [h⁻¹ M☉].
        R500c: (n,) comoving [h⁻¹ Mpc].
    """

    xi: np.ndarray
    pixel: np.ndarray
    M500c: np.ndarray
    R500c: np.ndarray


def _block_count(pos: np.ndarray, finder: SOFinder) -> int:
    """Most particles in a 3×3×3 block of the finder's coarse cells (what its `capacity` must hold)."""
    box = np.asarray(finder.box_size)
    n_c = np.asarray(finder.coarse_shape)
    ijk = np.clip(np.floor(np.mod(pos, box) / box * n_c).astype(np.int64), 0, n_c - 1)
    counts = np.bincount(np.ravel_multi_index(ijk.T, tuple(n_c)), minlength=int(np.prod(n_c))).reshape(tuple(n_c))
    for axis in range(3):
        counts = counts + np.roll(counts, 1, axis) + np.roll(counts, -1, axis)
    return int(counts.max())


class BoxHaloFinder:
    """SO halos of the boxes of one run, projected onto their maps (module docstring).

    One finder serves every box of a run: its array sizes (`SOFinder.capacity`,
    `max_neighbours`) are set from the first box with room to spare and grown
    only when a box needs more, so it compiles once or twice per run instead
    of once per box.

    Args:
        geometry: the lightcone geometry.
        theta: θ_sim (its cosmology sets ρ_c(z) and the particle mass).
        max_halos: density peaks examined per box (the highest).
        r_max: SO search radius [h⁻¹ Mpc]; capped at a third of the box's smallest side.
    """

    def __init__(self, geometry: LightconeGeometry, theta, *, max_halos: int = MAX_HALOS, r_max: float = R_MAX):
        self.geometry = geometry
        self.cosmo = Cosmology.from_theta(theta)
        self.max_halos = int(max_halos)
        self.r_max = min(float(r_max), min(geometry.box_size) / 3.0)
        self.finder: SOFinder | None = None

    def _sized(self, need: int, neighbours: int | None = None) -> SOFinder:
        n_ptcl = math.prod(self.geometry.mesh_shape)
        cap = min(n_ptcl, 8192 * math.ceil(1.25 * need / 8192))  # 25 % headroom: later boxes rarely need more
        # particles within r_max of one peak: at most the whole neighbourhood; 2¹⁷ by default (≈ 6 × 10¹⁴ h⁻¹ M☉
        # within 3 h⁻¹ Mpc at 0.39 h⁻¹ Mpc cells), raised to the capacity if a halo has more
        neighbours = min(cap, 131072) if neighbours is None else neighbours
        return SOFinder(self.geometry.box_size, self.geometry.mesh_shape, max_halos=self.max_halos, capacity=cap,
                        r_max=self.r_max, max_neighbours=neighbours)

    def __call__(self, pos, z: float, chi: float, depth: float) -> ProjectedHalos:
        """The halos of one box inside its map footprint and depth.

        Args:
            pos: (n_ptcl, 3) comoving particle positions [h⁻¹ Mpc] (`survey.box_particles`).
            z: box redshift.
            chi: axial comoving distance of the box centre [h⁻¹ Mpc].
            depth: true box depth [h⁻¹ Mpc].
        """
        g = self.geometry
        probe = SOFinder(g.box_size, g.mesh_shape, max_halos=self.max_halos, r_max=self.r_max)
        need = _block_count(np.asarray(pos), probe)
        if self.finder is None or need > self.finder.capacity:
            self.finder = self._sized(need)
        pos = jnp.asarray(pos)
        a = 1.0 / (1.0 + float(z))
        try:
            cat = find_halos(pos, None, a, self.cosmo, self.finder)
            valid = np.asarray(cat.valid)
        except Exception as err:  # noqa: BLE001  (eqx.error_if surfaces as an XLA runtime error)
            if "max_neighbours" not in str(err) or self.finder.max_neighbours >= self.finder.capacity:
                raise
            self.finder = self._sized(need, neighbours=self.finder.capacity)  # a halo with more particles than 2¹⁷
            cat = find_halos(pos, None, a, self.cosmo, self.finder)
            valid = np.asarray(cat.valid)
        hpos = np.asarray(cat.pos, np.float64)[valid]
        m500, r500 = np.asarray(cat.M500c, np.float64)[valid], np.asarray(cat.R500c, np.float64)[valid]
        cell = g.cell_size
        xi = (hpos[:, :2] - 0.5 * g.n_perp * cell) / float(chi)
        # line of sight: the cell whose CIC node is nearest, taken if the maps weight it above ½ (los_weights)
        k = np.mod(np.rint(hpos[:, 2] / cell).astype(np.int64), g.n_par)
        in_depth = np.clip(float(depth) / cell - k, 0.0, 1.0) > 0.5
        pixel = np.floor(xi / g.pixel_rad + 0.5 * g.n_pix).astype(np.int64)
        inside = in_depth & np.all((pixel >= 0) & (pixel < g.n_pix), axis=-1) & (m500 > 0)
        order = np.argsort(-m500[inside], kind="stable")
        return ProjectedHalos(xi[inside][order], pixel[inside][order], m500[inside][order], r500[inside][order])


def match_detections(seg: np.ndarray, halos: ProjectedHalos, max_sources: int) -> np.ndarray:
    """Index into `halos` of the most massive halo whose centre lies in each source's segment, −1 if none.

    Args:
        seg: (n_pix, n_pix) labels (ξ_x index, ξ_y index), 0 background, 1..max_sources.
        halos: the box's `ProjectedHalos` (most massive first).
        max_sources: catalogue slots (slot s holds label s + 1).

    Returns:
        (max_sources,) int index per slot.
    """
    match = np.full(max_sources, -1, np.int64)
    if len(halos.M500c) == 0:
        return match
    labels = np.asarray(seg)[halos.pixel[:, 0], halos.pixel[:, 1]]
    for i in range(len(labels) - 1, -1, -1):  # least massive first, so the most massive one is written last
        if labels[i] > 0:
            match[labels[i] - 1] = i
    return match
