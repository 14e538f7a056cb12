r"""Extended LDL (seed 001 §2.2.2): LDL weights conditioned on θ_sim, and for T on redshift.

The base LDL weights Θ_fid (trained on the fiducial model at one redshift)
are shifted by a hypernetwork's output,
$$Θ = Θ_\mathrm{fid} + δΘ(θ_\mathrm{sim}) \qquad \text{(eq. 7)},$$
with δΘ an MLP of θ_sim in unit-cube coordinates (`ThetaSim.to_unit`).
Θ is the flat vector of the LDL's inexact-array leaves in `ravel_pytree`
order, i.e. the *stored* parameters: γ, α, the B-spline coefficients Ξ (or
ln k_l, ln k_h, n), b0, the softplus-raw b̃1 and μ (see `ldl.ActivationLayer`).

* n_e has one hypernetwork and no redshift dependence (seed 001: emulating
  comoving n_e, z-conditioning does not help for z < 0.5).
* T has one hypernetwork per training redshift $z_k$ (default: the eight
  CAMELS snapshots of seed 001 Table 1); at z between $z_k$ and $z_{k+1}$ the
  *weight shifts* are interpolated linearly,
  $δΘ_z = (1-t)\,δΘ_{z_k} + t\,δΘ_{z_{k+1}}$, $t = (z - z_k)/(z_{k+1} - z_k)$,
  clamped to the end nets outside $[z_0, z_\mathrm{last}]$; this is
  differentiable in z (piecewise linear).

Outputs: n_e in units of the cosmic mean comoving electron density
(dimensionless; multiply by $\bar n_e$ for cm⁻³), and T in keV. Both are the
LDL's ReLU output, hence ≥ 0.

Every hypernetwork is anchored at the fiducial point,
$δΘ(θ) = δΘ_0 + \mathrm{MLP}(θ) - \mathrm{MLP}(θ_\mathrm{fid})$: its MLP
only moves the weights *away* from θ_fid, where the base LDL (trained on
the larger fiducial CV boxes) holds, so the conditioned model is the base
model at the fiducial point by construction. The constant δΘ_0 is zero for
n_e; for T it carries the fiducial redshift evolution relative to the base
redshift. At initialisation MLP ≡ 0 and δΘ_0 = 0, so the extended model
equals the base LDLs for every θ_sim and z.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..params import _LOG_UNIFORM, FIDUCIAL, PARAM_NAMES, PRIOR_BOUNDS, ThetaSim
from ..nbody.mesh import MeshOps
from .ldl import LDL

__all__ = ["CAMELS_REDSHIFTS", "PARAM_SCALES", "n_ldl_params", "ldl_params", "ldl_param_scales", "shift_ldl_params",
           "Hypernetwork", "ExtendedLDL"]

CAMELS_REDSHIFTS: tuple[float, ...] = (0.1, 0.15, 0.21, 0.27, 0.33, 0.40, 0.47, 0.54)
"""The training redshifts of the T hypernetworks (seed 001 Table 1)."""


def ldl_params(ldl: LDL) -> Float[Array, " n_param"]:
    """The LDL's trainable parameters Θ as a flat vector (`eqx.is_inexact_array` leaves, `ravel_pytree` order)."""
    params, _ = eqx.partition(ldl, eqx.is_inexact_array)
    flat, _ = ravel_pytree(params)
    return flat


def n_ldl_params(ldl: LDL) -> int:
    """Number of trainable scalars in `ldl` (the size of δΘ)."""
    params, _ = eqx.partition(ldl, eqx.is_inexact_array)
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def shift_ldl_params(ldl: LDL, delta: Float[Array, " n_param"]) -> LDL:
    """The LDL with parameters Θ + δΘ (eq. 7); `delta` is ordered as `ldl_params(ldl)`."""
    params, static = eqx.partition(ldl, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    if delta.shape != flat.shape:
        raise ValueError(f"δΘ has shape {delta.shape}, the LDL has {flat.shape} parameters")
    return eqx.combine(unravel(flat + delta.astype(flat.dtype)), static)


# How far one unit of hypernetwork output moves each kind of LDL parameter. The LDL's
# sensitivities differ by orders of magnitude (a displacement α of 10⁻³ already reshapes
# cluster cores, a power-law μ needs ~0.1): without this, one Adam step on the MLP that is
# small for μ throws α out of range, and on the synthetic sets every hypernetwork stage
# diverged in its first epoch.
PARAM_SCALES: dict[str, float] = {
    "gamma": 0.05, "alpha": 1e-4, "coeffs": 0.1, "log_k_l": 0.1, "log_k_h": 0.1, "n": 0.1,
    "b0": 0.1, "b1_raw": 0.1, "mu": 0.05,
}


def ldl_param_scales(ldl: LDL) -> tuple[float, ...]:
    """Per-parameter output scales of a hypernetwork for `ldl` (`PARAM_SCALES`, `ldl_params` order)."""
    params, _ = eqx.partition(ldl, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    out = []
    for path, leaf in leaves:
        name = getattr(path[-1], "name", None)
        if name not in PARAM_SCALES:
            raise ValueError(f"no hypernetwork scale for LDL parameter {jax.tree_util.keystr(path)}")
        out += [PARAM_SCALES[name]] * int(np.size(leaf))
    return tuple(out)


def _unit_fiducial() -> np.ndarray:
    """θ_fid in unit-cube coordinates (`ThetaSim.to_unit`), in numpy: importing must not start the XLA
    backend, which `jax.distributed.initialize` has to precede."""
    out = []
    for name, is_log in zip(PARAM_NAMES, _LOG_UNIFORM):
        lo, hi = PRIOR_BOUNDS[name]
        v = FIDUCIAL[name]
        if is_log:
            v, lo, hi = math.log(v), math.log(lo), math.log(hi)
        out.append((v - lo) / (hi - lo))
    return np.asarray(out, dtype=np.float64)


_U_FID = _unit_fiducial()


class Hypernetwork(eqx.Module):
    r"""θ_sim (unit cube) → δΘ = δΘ_0 + s ⊙ [MLP(u) − MLP(u_fid)], the shift of an LDL's flat parameters.

    The input u = `theta.to_unit()` ∈ [0, 1]⁶ is centred as 2u − 1; the MLP
    has `depth` hidden layers of `width` units with `activation` (default
    tanh). Subtracting the MLP at the fiducial point anchors δΘ(θ_fid) = δΘ_0;
    s (`scale`, static) sets how far a unit output moves each parameter
    (`ldl_param_scales`; default 1).
    The MLP's last layer (weights and bias) and δΘ_0 start at zero, so δΘ = 0
    at initialisation.

    Attributes:
        mlp: the `eqx.nn.MLP` (6 → n_out).
        offset: δΘ_0, the shift at the fiducial point (n_out,).
        scale: per-output scales s (static tuple of n_out floats).
    """

    mlp: eqx.nn.MLP
    offset: Float[Array, " n_out"]
    scale: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, n_out: int, *, key: PRNGKeyArray, width: int = 64, depth: int = 2, activation=jnp.tanh,
                 scale: tuple[float, ...] | None = None):
        if n_out < 1:
            raise ValueError(f"n_out = {n_out} must be >= 1")
        scale = (1.0,) * n_out if scale is None else tuple(float(v) for v in scale)
        if len(scale) != n_out or any(not v > 0 for v in scale):
            raise ValueError(f"scale must hold {n_out} positive floats, got {scale}")
        self.scale = scale
        mlp = eqx.nn.MLP(len(PARAM_NAMES), n_out, width, depth, activation=activation, key=key)
        last = mlp.layers[-1]
        self.mlp = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias))
        )
        self.offset = jnp.zeros(n_out, dtype=last.bias.dtype)

    @property
    def n_out(self) -> int:
        return self.mlp.out_size

    def __call__(self, u: Float[Array, " 6"]) -> Float[Array, " n_out"]:
        """δΘ for one θ_sim given in unit-cube coordinates (`ThetaSim.to_unit()`); batch with `vmap`."""
        u = jnp.asarray(u).astype(self.offset.dtype)  # the weights' precision (float32 when loaded)
        u_fid = jnp.asarray(_U_FID, dtype=u.dtype)
        s = jnp.asarray(self.scale, dtype=u.dtype)
        return self.offset + s * (self.mlp(2.0 * u - 1.0) - self.mlp(2.0 * u_fid - 1.0))


def _checked_unit(theta: ThetaSim) -> Float[Array, " 6"]:
    """θ_sim in unit-cube coordinates, after checking it is one point inside the prior.

    The hypernetworks are trained inside the seed 001 Table 1 prior only: a value outside
    raises (`eqx.error_if`, so also under jit, naming the parameter and its range).
    """
    if not isinstance(theta, ThetaSim):
        raise TypeError(f"theta must be a ThetaSim, got {type(theta).__name__}")
    shapes = {name: jnp.shape(getattr(theta, name)) for name in PARAM_NAMES}
    if any(shape != () for shape in shapes.values()):
        raise ValueError(f"theta must hold one θ_sim (scalar fields), got shapes {shapes}: vmap over a batched ThetaSim")
    return theta.check_prior().to_unit()


def _interpolation_weights(z, redshifts: tuple[float, ...]):
    """(i, t): δΘ_z = (1 − t) δΘ_{z_i} + t δΘ_{z_{i+1}}, clamped outside the range."""
    zs = np.asarray(redshifts, dtype=float)
    zj = jnp.asarray(zs, dtype=z.dtype)
    i = jnp.clip(jnp.searchsorted(zj, z, side="right") - 1, 0, zs.size - 2)
    t = jnp.clip((z - zj[i]) / (zj[i + 1] - zj[i]), 0.0, 1.0)
    return i, t


class ExtendedLDL(eqx.Module):
    r"""The extended LDL of seed 001 §2.2.2: (n_e, T) fields from particles, θ_sim and z.

    Attributes:
        n_e_base: base LDL for n_e, Θ_fid (output in units of the mean n_e).
        T_base: base LDL for T, Θ_fid (output in keV).
        n_e_net: hypernetwork δΘ(θ_sim) for n_e (no z dependence).
        T_nets: one hypernetwork per training redshift for T.
        T_redshifts: the training redshifts of `T_nets`, strictly increasing (static).
    """

    n_e_base: LDL
    T_base: LDL
    n_e_net: Hypernetwork
    T_nets: tuple[Hypernetwork, ...]
    T_redshifts: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, n_e_base: LDL, T_base: LDL, n_e_net: Hypernetwork, T_nets, T_redshifts=CAMELS_REDSHIFTS):
        self.n_e_base = n_e_base
        self.T_base = T_base
        self.n_e_net = n_e_net
        self.T_nets = tuple(T_nets)
        self.T_redshifts = tuple(float(z) for z in T_redshifts)

    def __check_init__(self):
        if len(self.T_nets) != len(self.T_redshifts) or not self.T_nets:
            raise ValueError(f"need one T net per redshift (≥ 1), got {len(self.T_nets)} nets and {len(self.T_redshifts)} redshifts")
        if np.any(np.diff(self.T_redshifts) <= 0):
            raise ValueError(f"T_redshifts must be strictly increasing, got {self.T_redshifts}")
        if self.n_e_net.n_out != n_ldl_params(self.n_e_base):
            raise ValueError(f"n_e_net outputs {self.n_e_net.n_out} values, n_e_base has {n_ldl_params(self.n_e_base)} parameters")
        n_T = n_ldl_params(self.T_base)
        if any(net.n_out != n_T for net in self.T_nets):
            raise ValueError(f"every T net must output {n_T} values (T_base's parameter count)")

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        filter: str = "bspline",
        redshifts: tuple[float, ...] = CAMELS_REDSHIFTS,
        *,
        n_displacements: int = 2,
        width: int = 64,
        depth: int = 2,
        gradient: str = "exact",
        source_stride: int = 1,
    ) -> ExtendedLDL:
        """Near-identity base LDLs (`LDL.init`, deterministic) and zero-output hypernetworks.

        Args:
            key: PRNG key of the hypernetworks' hidden layers.
            filter: "bspline" (default) or "parametric", for both base LDLs.
            redshifts: training redshifts of the T nets (default seed 001 Table 1).
            n_displacements: displacement layers per LDL.
            width: hypernetwork hidden-layer width.
            depth: hypernetwork hidden-layer count.
            gradient: displacement gradient of both LDLs, "exact" or "fd4" (`ldl.DisplacementLayer`).
            source_stride: source sub-sampling of both LDLs' displacement layers (`ldl.DisplacementLayer`).
        """
        kw = dict(gradient=gradient, source_stride=source_stride)
        n_e_base = LDL.init(None, filter, n_displacements, **kw)
        T_base = LDL.init(None, filter, n_displacements, **kw)
        k_n, *k_T = jax.random.split(key, 1 + len(redshifts))
        n_e_net = Hypernetwork(n_ldl_params(n_e_base), key=k_n, width=width, depth=depth, scale=ldl_param_scales(n_e_base))
        T_nets = tuple(Hypernetwork(n_ldl_params(T_base), key=k, width=width, depth=depth, scale=ldl_param_scales(T_base))
                       for k in k_T)
        return cls(n_e_base, T_base, n_e_net, T_nets, redshifts)

    def delta_n_e(self, theta: ThetaSim) -> Float[Array, " n_param"]:
        """δΘ of the n_e LDL for one θ_sim (inside the prior)."""
        return self.n_e_net(_checked_unit(theta))

    def delta_T(self, theta: ThetaSim, z: Float[ArrayLike, ""]) -> Float[Array, " n_param"]:
        """δΘ_z of the T LDL: linear in z between the two nearest trained nets, clamped outside."""
        u = _checked_unit(theta)
        if jnp.ndim(z) != 0:
            raise ValueError(f"z must be a scalar redshift, got shape {jnp.shape(z)}: vmap over several")
        if len(self.T_nets) == 1:
            return self.T_nets[0](u)
        outs = jnp.stack([net(u) for net in self.T_nets])  # (n_z, n_param)
        i, t = _interpolation_weights(jnp.asarray(z, dtype=outs.dtype), self.T_redshifts)
        return (1.0 - t) * outs[i] + t * outs[i + 1]

    def n_e_ldl(self, theta: ThetaSim) -> LDL:
        """The n_e LDL with Θ = Θ_fid + δΘ(θ_sim)."""
        return shift_ldl_params(self.n_e_base, self.delta_n_e(theta))

    def T_ldl(self, theta: ThetaSim, z: Float[ArrayLike, ""]) -> LDL:
        """The T LDL with Θ = Θ_fid + δΘ_z(θ_sim)."""
        return shift_ldl_params(self.T_base, self.delta_T(theta, z))

    def n_e(
        self,
        pos: Float[Array, "n_ptcl 3"],
        theta: ThetaSim,
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> Float[Array, "nx ny nz"]:
        """Comoving n_e in units of the cosmic mean $\\bar n_e$ (dimensionless, ≥ 0) on the mesh.

        Args:
            pos: (n_ptcl, 3) comoving dark-matter positions [h⁻¹ Mpc].
            theta: one θ_sim (vmap over a batched `ThetaSim` for several).
            box_size: box side(s) [h⁻¹ Mpc] (static).
            mesh_shape: (nx, ny, nz) (static).
        """
        return self.n_e_ldl(theta)(pos, box_size, mesh_shape, mesh_ops)

    def T_keV(
        self,
        pos: Float[Array, "n_ptcl 3"],
        theta: ThetaSim,
        z: Float[ArrayLike, ""],
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> Float[Array, "nx ny nz"]:
        """Gas temperature [keV] (≥ 0) on the mesh at redshift z (arguments as `n_e`)."""
        return self.T_ldl(theta, z)(pos, box_size, mesh_shape, mesh_ops)

    def __call__(
        self,
        pos: Float[Array, "n_ptcl 3"],
        theta: ThetaSim,
        z: Float[ArrayLike, ""],
        box_size: float | tuple[float, float, float],
        mesh_shape: tuple[int, int, int],
        mesh_ops: MeshOps | None = None,
    ) -> tuple[Float[Array, "nx ny nz"], Float[Array, "nx ny nz"]]:
        """(n_e / n̄_e, T [keV]) on the mesh; with `mesh_ops` a `nbody.domain.SlabMesh`, this device's slab
        (inside `shard_map`; see `ldl.DisplacementLayer.displacement`)."""
        return (self.n_e(pos, theta, box_size, mesh_shape, mesh_ops),
                self.T_keV(pos, theta, z, box_size, mesh_shape, mesh_ops))
