"""Particle-mesh N-body: initial conditions, LPT, CIC mesh operations, FastPM solver, one box over devices."""

from .config import PMConfig
from .domain import Decomposition, PencilDecomposition, SlabDecomposition, pencil_mesh
from .ic import linear_field, momentum_from_velocity, velocity_from_momentum, white_noise
from .lpt import lpt, lpt_displacements
from .mesh import force_from_density, gradient_kernel, paint_cic, read_cic, rfft_wavevectors
from .solver import DriftTerm, FastPMKDK, KickTerm, NBodyResult, nbody, pm_force, step_grid

__all__ = [
    "PMConfig", "white_noise", "linear_field", "momentum_from_velocity", "velocity_from_momentum", "lpt", "lpt_displacements",
    "paint_cic", "read_cic", "rfft_wavevectors", "gradient_kernel", "force_from_density",
    "pm_force", "DriftTerm", "KickTerm", "FastPMKDK", "NBodyResult", "nbody", "step_grid",
    "Decomposition", "SlabDecomposition", "PencilDecomposition", "pencil_mesh",
]
