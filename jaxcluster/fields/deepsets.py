r"""Rotation-equivariant DeepSets for the electron pressure of halos (seed 003, Thiele et al. 2022).

The model predicts $P_e(\vec r)/P_{200}$ at target points $\vec r$ around a
halo from the set of its dark-matter particles (positions $\vec q_i$ relative
to the halo centre in units of $R_{200c}$, velocities $\vec v_i$ relative to
the bulk motion in units of $V_{200c} = \sqrt{G M_{200c}/R_{200c}}$):

$$\hat P_e(\vec r) = \mathrm{ReLU}[g\,\mathrm{ReLU}(1 + a_1) + k \sinh a_2] \qquad \text{(seed 003 eq. 4)}$$

* **GNFW** (`GNFWProfile`): $g$ = the Battaglia et al. (2012) profile in units
  of $P_{200}$ (electron pressure), its nine parameters ($P_0, x_c, β$ at
  $10^{14} M_☉$, z = 0 and their mass and (1+z) slopes) learnable and
  initialised at the published values. Fitted alone to the training halos it is
  the **benchmark** (as seed 003 fits it "to our data").
* **Cluster frame** (`cluster_frame`): SO(3) scalars $\mathbf s_α$ (log M,
  $X_{\rm off}$, $V_{\rm off}$, |J|, three mass-inertia eigenvalues, z) and unit
  vectors $\mathbf e_α$ (Ĵ, $\hat X_{\rm off}$, the inertia eigenvectors ordered
  by eigenvalue, each oriented so $\vec e\cdot\vec J > 0$), from the particles.
* **Origin** (`OriginModule`, mis-centring): a vector DeepSet
  $\vec o_k = \langle φ_k(\mathbf f_i)\,\vec q_i\rangle_i$ on per-particle scalars
  $\mathbf f_i = (|q|, |v|, \hat q\cdot\mathbf e, \hat v\cdot\mathbf e, \mathbf s)$; the
  shift is $Δ\vec o = \frac12 \tanh(|\vec u|)\,\hat u$ with
  $\vec u = X_{\rm off}\vec o_1 + \vec o_2$ (R_200 units), and g is evaluated at
  $|\vec r - Δ\vec o|$. (Seed 003 eq. 5 applies tanh per component, which breaks
  exact equivariance; the radial tanh bounds |Δo| by R_200/2 the same way and
  keeps it exact.)
* **Local** (`LocalModule`): a scalar DeepSet on the K nearest particles within
  $R_{\rm loc}$ of the target (features $|q|, |v|, \hat q\cdot\mathbf e,
  \hat v\cdot\mathbf e, \vec q\cdot\vec v$, masked mean) concatenated with
  $\ln(1 + N_{\rm loc})$.
* **Stochastic** (`StochasticModule`): a conditional-VAE encoder of the
  residuals of the target with respect to the published GNFW profile averaged
  in 32 linear radial shells out to 2 R_200 (seed 003; `shell_means`), giving (μ, ln σ) of **one** latent $a$;
  training samples $a = μ + σ ε$ and adds $β_{KL}\,\mathrm{KL}$, evaluation uses
  μ (reconstruction) or $a \sim \mathcal N(0, 1)$.
* **Aggregator**: an MLP on the Local output, $|\vec r|$, $|\hat r\cdot\mathbf e|$,
  $\mathbf s$ and $a$ giving $(a_1, a_2)$.

Every MLP (`FeatureMLP`) uses LeakyReLU and layer normalisation; the
Aggregator has dropout (30 % after its first hidden layer, 5 % after the
others), active in training mode only (`eqx.nn.inference_mode` turns it off).
Training (`fit_pressure_model`, seed 003 §3) adds eq. (6) scalar noise, ~2°
rotations of the cluster vectors (`vector_rotation_noise`), weight decay on
the Aggregator and Origin, and per-module learning-rate factors
(`pressure_optimizer`, `module_labels`).

Every input to an MLP is an SO(3) scalar, and vectors enter only as
$φ(\text{scalars})\,\vec q$, so rotating all particles and targets leaves
$\hat P_e$ unchanged (exactly, up to round-off), and particle order never
matters (means over particles). Loss (seed 003 eq. 7):
$\mathcal L = \langle ((P_e - \hat P_e)/P_{200})^2\rangle_{|\vec r| < 2R_{200}}$;
figure of merit (eq. 8) $\mathcal L_{\rm opt} = \mathrm{median}(\mathcal L_{\rm net}/\mathcal L_{\rm GNFW})$.

Training data (`halo_samples`) come from the synthetic training boxes: the
target is $P_e = n_e\,kT$ (physical) of the synthetic gas model, whose halo
gas *is* a Battaglia-like profile plus dark-matter-tied departures, so
results on it are **synthetic** and not comparable with seed 003's numbers.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ..cosmology import Cosmology
from ..io.snapshots import MPC_CM, SOLAR_MASS_G
from .profiles import ELECTRON_PRESSURE_FRACTION

__all__ = [
    "HaloSample",
    "cluster_frame",
    "GNFWProfile",
    "OriginModule",
    "LocalModule",
    "StochasticModule",
    "PressureDeepSets",
    "reconstruction_loss",
    "training_loss",
    "scalar_statistics",
    "neighbour_gaps",
    "scalar_noise",
    "loss_ratio_median",
    "shell_means",
    "halo_samples",
    "FeatureMLP",
    "rotate_frame_vectors",
    "vector_rotation_noise",
    "MODULE_LABELS",
    "module_labels",
    "pressure_optimizer",
    "fit_pressure_model",
    "N_SCALARS",
    "N_VECTORS",
]

N_SCALARS = 8  # (log M − 13.5)/0.5, X_off, V_off, |J|, 3 inertia eigenvalues, z
N_VECTORS = 5  # Ĵ, X̂_off, 3 inertia eigenvectors
_EPS = 1e-12
_G_KM2_S2_MPC_PER_MSUN = 6.67430e-8 * SOLAR_MASS_G / MPC_CM / 1e10  # G M☉/Mpc in km² s⁻²


class HaloSample(eqx.Module):
    """One halo's inputs and targets (fixed shapes; stack along a leading axis and vmap for batches).

    Lengths in units of R_200c, velocities in units of V_200c, pressure in units of P_200.

    Attributes:
        q: (n_p, 3) particle positions relative to the halo-finder centre.
        v: (n_p, 3) particle velocities relative to the bulk velocity.
        r: (n_t, 3) target positions relative to the halo-finder centre.
        local_q: (n_t, K, 3) the K nearest particles to each target, relative to it.
        local_v: (n_t, K, 3) their velocities relative to their mean.
        local_mask: (n_t, K) which neighbours lie within R_loc.
        n_local: (n_t,) number of particles within R_loc of the target (all, not only K).
        log10_M: () log₁₀(M_200c / h⁻¹ M☉).
        z: () redshift.
        shell_residual: (n_shell,) ⟨P_e − P_GNFW⟩/P_200 in radial shells to 2 R_200 (the VAE's input).
        P: (n_t,) target P_e / P_200.
        mask: (n_t,) valid targets (|r| < 2 R_200).
    """

    q: Float[Array, "n_p 3"]
    v: Float[Array, "n_p 3"]
    r: Float[Array, "n_t 3"]
    local_q: Float[Array, "n_t k 3"]
    local_v: Float[Array, "n_t k 3"]
    local_mask: Bool[Array, "n_t k"]
    n_local: Float[Array, " n_t"]
    log10_M: Float[Array, ""]
    z: Float[Array, ""]
    shell_residual: Float[Array, " n_shell"]
    P: Float[Array, " n_t"]
    mask: Bool[Array, " n_t"]


def _safe_norm(x, axis=-1, keepdims=False):
    return jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims) + _EPS)


def cluster_frame(halo: HaloSample) -> tuple[Float[Array, " n_s"], Float[Array, "n_e 3"]]:
    """Cluster scalars s_α (N_SCALARS,) and unit vectors e_α (N_VECTORS, 3) from the halo's particles.

    Scalars: (log₁₀M − 13.5)/0.5; X_off = |⟨q⟩| (centre of mass offset of the
    particles within R_200); V_off = |⟨v⟩|; |J| = |⟨q × v⟩|; the mass-inertia
    eigenvalues of ⟨q qᵀ⟩ (ascending); z. Vectors: Ĵ, X̂_off and the inertia
    eigenvectors, each flipped so its contraction with J is ≥ 0 (seed 003).
    """
    q, v = halo.q, halo.v
    inside = (jnp.sum(q * q, axis=-1) < 1.0).astype(q.dtype)[:, None]
    n_in = jnp.maximum(jnp.sum(inside), 1.0)
    x_off = jnp.sum(q * inside, axis=0) / n_in
    v_off = jnp.sum(v * inside, axis=0) / n_in
    J = jnp.sum(jnp.cross(q, v - v_off[None, :]) * inside, axis=0) / n_in
    inertia = jnp.einsum("pi,pj->ij", q * inside, q) / n_in
    evals, evecs = jnp.linalg.eigh(inertia)  # ascending, columns
    evecs = evecs.T * jnp.where(evecs.T @ J >= 0, 1.0, -1.0)[:, None]
    scalars = jnp.stack([(halo.log10_M - 13.5) / 0.5, _safe_norm(x_off), _safe_norm(v_off), _safe_norm(J),
                         *(10.0 * evals), halo.z])
    vectors = jnp.concatenate([(J / _safe_norm(J))[None], (x_off / _safe_norm(x_off))[None], evecs])
    return scalars, vectors


class FeatureMLP(eqx.Module):
    """MLP on SO(3) scalars: Linear → [LayerNorm] → LeakyReLU → [Dropout] per hidden layer, then Linear (seed 003 §2).

    Args:
        in_size: input features.
        out_size: outputs.
        width: hidden neurons per layer.
        depth: hidden layers (≥ 1).
        layer_norm: layer normalisation (Ba et al. 2016) before each hidden activation (seed 003: "generally").
        dropout: dropout rate after each hidden layer's activation, in [0, 1); a shorter sequence
            repeats its last rate, empty means none (seed 003's Aggregator: (0.3, 0.05)).
        key: PRNG key for the weights.

    Dropout is active unless in inference mode (`eqx.nn.inference_mode`), and then
    needs a `key`. Without layer norm and dropout the leaves are those of an
    `eqx.nn.MLP` of the same sizes (models saved before these options still load).
    """

    layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm | None, ...]
    dropouts: tuple[eqx.nn.Dropout | None, ...]

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, *, layer_norm: bool = True,
                 dropout: tuple[float, ...] = (), key: PRNGKeyArray):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if any(not 0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"dropout rates must lie in [0, 1), got {dropout}")
        keys = jax.random.split(key, depth + 1)
        sizes = [in_size] + [width] * depth + [out_size]
        self.layers = tuple(eqx.nn.Linear(sizes[i], sizes[i + 1], key=keys[i]) for i in range(depth + 1))
        self.norms = tuple(eqx.nn.LayerNorm(width) if layer_norm else None for _ in range(depth))
        rates = [dropout[min(i, len(dropout) - 1)] if dropout else 0.0 for i in range(depth)]
        self.dropouts = tuple(eqx.nn.Dropout(p) if p > 0 else None for p in rates)

    def needs_key(self) -> bool:
        """Whether a call draws dropout masks (some rate > 0 and not in inference mode)."""
        return any(d is not None and not d.inference for d in self.dropouts)

    def __call__(self, x: Float[Array, " n_in"], *, key: PRNGKeyArray | None = None) -> Float[Array, " n_out"]:
        for i, (lin, norm, drop) in enumerate(zip(self.layers[:-1], self.norms, self.dropouts)):
            x = lin(x)
            x = jax.nn.leaky_relu(norm(x) if norm is not None else x)
            if drop is not None:
                x = drop(x, key=None if key is None else jax.random.fold_in(key, i))
        return self.layers[-1](x)


def _zero_last(mlp: FeatureMLP) -> FeatureMLP:
    """Zero the last layer (a module that starts with no effect)."""
    last = mlp.layers[-1]
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                       (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))


def _rotate(v: Float[Array, "*b 3"], omega: Float[Array, "*b 3"]) -> Float[Array, "*b 3"]:
    """Rodrigues: v rotated by the angle |ω| [rad] about ω̂."""
    theta = _safe_norm(omega, keepdims=True)
    k = omega / theta
    c, s_ = jnp.cos(theta), jnp.sin(theta)
    return v * c + jnp.cross(k, v) * s_ + k * jnp.sum(k * v, -1, keepdims=True) * (1.0 - c)


def rotate_frame_vectors(e: Float[Array, "n_e 3"], rotation: Float[Array, "n_e 3"]) -> Float[Array, "n_e 3"]:
    r"""Rotate each cluster vector $\mathbf e_α$ by its own small rotation (seed 003 §3 vector noise).

    `rotation[α]` is a rotation vector (angle [rad] × unit axis) whose components
    are taken in the cluster's inertia-eigenvector frame (`e[2:5]`), not in the
    box frame: the perturbed vectors then rotate with the halo for a fixed
    `rotation` (the noise is exactly equivariant), while an isotropic draw
    (`vector_rotation_noise`) has the same distribution in any frame.
    """
    omega = rotation.astype(e.dtype) @ e[2:5]
    return _rotate(e, omega)


def vector_rotation_noise(key: PRNGKeyArray, batch_shape: tuple[int, ...], sigma_deg: float,
                          dtype=None) -> Float[Array, "*b n_e 3"]:
    """Rotation vectors (`rotate_frame_vectors`) with isotropic axes and angles ~ N(0, sigma_deg²) (seed 003: ~2°).

    Returns:
        (*batch_shape, N_VECTORS, 3) rotation vectors [rad].
    """
    if sigma_deg < 0:
        raise ValueError(f"sigma_deg must be >= 0, got {sigma_deg}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    ka, kt = jax.random.split(key)
    axis = jax.random.normal(ka, (*batch_shape, N_VECTORS, 3), dtype)
    axis = axis / _safe_norm(axis, keepdims=True)
    angle = jax.random.normal(kt, (*batch_shape, N_VECTORS, 1), dtype) * math.radians(sigma_deg)
    return angle * axis


def _particle_scalars(q, v, e):
    """Per-particle SO(3) scalars: |q|, |v|, q̂·e, v̂·e (q, v: (..., 3); e: (n_e, 3))."""
    nq, nv = _safe_norm(q, keepdims=True), _safe_norm(v, keepdims=True)
    return jnp.concatenate([nq, nv, (q / nq) @ e.T, (v / nv) @ e.T], axis=-1)


class GNFWProfile(eqx.Module):
    r"""Battaglia et al. (2012) electron pressure / P_200 with learnable parameters (the benchmark when fitted alone).

    $P_e/P_{200} = f_e P_0 (x/x_c)^{-0.3}(1 + x/x_c)^{-β}$, each of
    $\ln P_0, \ln x_c, \ln β$ linear in $\ln(M/10^{14}M_☉)$ and $\ln(1+z)$
    (rows of `params`: value at the pivot, mass slope, z slope).
    """

    params: Float[Array, "3 3"]
    h: float = eqx.field(static=True)

    def __init__(self, h: float = 0.6711):
        # Table 1 of Battaglia et al. (2012), AGN feedback.
        self.params = jnp.asarray([[math.log(18.1), 0.154, -0.758], [math.log(0.497), -0.00865, 0.731],
                                   [math.log(4.35), 0.0393, 0.415]], dtype=jnp.result_type(float))
        self.h = float(h)

    def __call__(self, x: Float[Array, "*x"], log10_M: Float[Array, ""], z: Float[Array, ""]) -> Float[Array, "*x"]:
        """P_e / P_200 at x = r / R_200c, for log₁₀(M_200c / h⁻¹ M☉) and z."""
        p = self.params.astype(x.dtype)
        lnm = (log10_M.astype(x.dtype) - math.log10(self.h) - 14.0) * math.log(10.0)
        lnz = jnp.log1p(z.astype(x.dtype))
        lnP0, lnxc, lnb = (p[i, 0] + p[i, 1] * lnm + p[i, 2] * lnz for i in range(3))
        u = jnp.maximum(x, 1e-3) / jnp.exp(lnxc)
        return ELECTRON_PRESSURE_FRACTION * jnp.exp(lnP0) * u**-0.3 * (1.0 + u) ** -jnp.exp(lnb)


class OriginModule(eqx.Module):
    """Vector DeepSet for the mis-centring shift Δo (R_200 units), |Δo| < 1/2."""

    phi: FeatureMLP

    def __init__(self, width: int = 64, depth: int = 2, *, layer_norm: bool = True, key: PRNGKeyArray):
        n_in = 2 + 2 * N_VECTORS + N_SCALARS
        # Start from no shift: zero last layer.
        self.phi = _zero_last(FeatureMLP(n_in, 2, width, depth, layer_norm=layer_norm, key=key))

    def __call__(self, halo: HaloSample, s: Float[Array, " n_s"], e: Float[Array, "n_e 3"],
                 x_off: Float[Array, ""] | None = None) -> Float[Array, " 3"]:
        """Δo from the particles, the (normalised) scalars s, vectors e and the raw X_off (default s[1])."""
        f = _particle_scalars(halo.q, halo.v, e)
        f = jnp.concatenate([f, jnp.broadcast_to(s, (f.shape[0], s.size))], axis=-1)
        w = jax.vmap(self.phi)(f)  # (n_p, 2) scalar weights
        o = jnp.einsum("pk,pi->ki", w, halo.q) / halo.q.shape[0]  # (2, 3) vectors
        u = (s[1] if x_off is None else x_off) * o[0] + o[1]  # X_off o₁ + o₂ (seed 003 eq. 5)
        nu = _safe_norm(u)
        return 0.5 * jnp.tanh(nu) * u / nu


class LocalModule(eqx.Module):
    """Scalar DeepSet on the particles within R_loc of a target (output: `width` features + ln(1 + N))."""

    phi: FeatureMLP
    rho: FeatureMLP

    def __init__(self, width: int = 64, depth: int = 2, *, layer_norm: bool = True, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.phi = FeatureMLP(3 + 2 * N_VECTORS, width, width, depth, layer_norm=layer_norm, key=k1)
        self.rho = FeatureMLP(width + 1, width, width, 1, layer_norm=layer_norm, key=k2)

    def __call__(self, local_q, local_v, local_mask, n_local, e) -> Float[Array, " width"]:
        """One target: local_q, local_v (K, 3), local_mask (K,), n_local (), e (n_e, 3)."""
        f = _particle_scalars(local_q, local_v, e)
        qv = jnp.sum(local_q * local_v, axis=-1, keepdims=True)
        g = jax.vmap(self.phi)(jnp.concatenate([f, qv], axis=-1))  # (K, width)
        m = local_mask.astype(g.dtype)[:, None]
        pooled = jnp.sum(g * m, axis=0) / jnp.maximum(jnp.sum(m), 1.0)
        return self.rho(jnp.concatenate([pooled, jnp.log1p(n_local)[None]]))


class StochasticModule(eqx.Module):
    """Conditional-VAE encoder: shell residuals and cluster scalars → (μ, ln σ) of one latent."""

    mlp: FeatureMLP

    def __init__(self, n_shell: int, width: int = 32, depth: int = 2, *, layer_norm: bool = True,
                 key: PRNGKeyArray):
        self.mlp = FeatureMLP(n_shell + N_SCALARS, 2, width, depth, layer_norm=layer_norm, key=key)

    def __call__(self, shell_residual, s) -> tuple[Float[Array, ""], Float[Array, ""]]:
        out = self.mlp(jnp.concatenate([10.0 * shell_residual, s]))
        return out[0], jnp.clip(out[1], -7.0, 2.0)


class PressureDeepSets(eqx.Module):
    """Seed 003's modular model; any of Origin, Local, Stochastic may be None (all None: the GNFW benchmark).

    Args:
        n_shell: radial shells of the Stochastic module's input (must match the data; seed 003: 32).
        origin: build the Origin module.
        local: build the Local module.
        stochastic: build the Stochastic module.
        width: MLP width (seed 003: ~196).
        depth: MLP hidden layers (seed 003: 3–4).
        layer_norm: layer normalisation in every MLP (seed 003 §2).
        dropout: the Aggregator's dropout rates, first hidden layer then the rest (seed 003 §2: ~30 %, ~5 %);
            () for none. Active in training mode only: evaluate `eqx.nn.inference_mode(model)`.
        h: H₀/100 (the GNFW mass pivot is in M☉).
        key: PRNG key for the weights.
    """

    gnfw: GNFWProfile
    origin: OriginModule | None
    local: LocalModule | None
    stochastic: StochasticModule | None
    aggregator: FeatureMLP | None
    log_k: Float[Array, ""]
    s_mean: Float[Array, " n_s"]
    s_std: Float[Array, " n_s"]

    def __init__(self, n_shell: int = 32, *, origin: bool = True, local: bool = True, stochastic: bool = True,
                 width: int = 64, depth: int = 2, layer_norm: bool = True, dropout: tuple[float, ...] = (0.3, 0.05),
                 h: float = 0.6711, key: PRNGKeyArray):
        ko, kl, ks, ka = jax.random.split(key, 4)
        self.gnfw = GNFWProfile(h)
        self.origin = OriginModule(width, depth, layer_norm=layer_norm, key=ko) if origin else None
        self.local = LocalModule(width, depth, layer_norm=layer_norm, key=kl) if local else None
        self.stochastic = StochasticModule(n_shell, layer_norm=layer_norm, key=ks) if stochastic else None
        n_agg = (width if local else 0) + 1 + N_VECTORS + N_SCALARS + (1 if stochastic else 0)
        if local or stochastic:
            # Start at the GNFW prediction: a₁ = a₂ = 0.
            self.aggregator = _zero_last(FeatureMLP(n_agg, 2, width, depth, layer_norm=layer_norm,
                                                    dropout=tuple(dropout), key=ka))
        else:
            self.aggregator = None
        self.log_k = jnp.asarray(0.0, dtype=jnp.result_type(float))
        self.s_mean = jnp.zeros(N_SCALARS, jnp.result_type(float))
        self.s_std = jnp.ones(N_SCALARS, jnp.result_type(float))

    def with_scalar_normalisation(self, train: HaloSample) -> PressureDeepSets:
        """The model with its scalar inputs s_α mapped to zero mean, unit variance over `train` (seed 003 §3).

        The affine map is fixed (held out of training by `stop_gradient`); the
        raw X_off still scales the Origin vector (eq. 5).
        """
        mean, std = scalar_statistics(train)
        return eqx.tree_at(lambda m: (m.s_mean, m.s_std), self, (mean.astype(self.s_mean.dtype), std.astype(self.s_std.dtype)))

    def __call__(self, halo: HaloSample, *, key: PRNGKeyArray | None = None, latent: str = "posterior",
                 scalar_noise: Float[Array, " n_s"] | None = None,
                 vector_rotation: Float[Array, "n_e 3"] | None = None) -> tuple[Float[Array, " n_t"], Float[Array, ""]]:
        """Predict P_e / P_200 at the halo's targets.

        Args:
            halo: one `HaloSample`.
            key: draws the latent (training: a = μ + σε; `latent="prior"`: a ~ N(0, 1)) and, in training
                mode, the Aggregator's dropout masks (then required).
            latent: "posterior" (μ + σε with a key, μ without: the reconstruction) or "prior".
            scalar_noise: (N_SCALARS,) δ added to the raw scalars s_α before their
                normalisation (training augmentation, seed 003 eq. 6; `scalar_noise`).
            vector_rotation: (N_VECTORS, 3) small rotations of the cluster vectors e_α
                (training augmentation, seed 003 §3; `rotate_frame_vectors`, `vector_rotation_noise`).

        Returns:
            (P̂ (n_t,), KL of the latent's posterior to N(0, 1); 0 without the Stochastic module).
        """
        if latent not in ("posterior", "prior"):
            raise ValueError(f"latent must be 'posterior' or 'prior', got {latent!r}")
        dtype = halo.r.dtype
        s_raw, e = cluster_frame(halo)
        if vector_rotation is not None:
            e = rotate_frame_vectors(e, vector_rotation)
        if scalar_noise is not None:
            s_raw = s_raw + scalar_noise.astype(s_raw.dtype)
        s = (s_raw - jax.lax.stop_gradient(self.s_mean).astype(s_raw.dtype)) / jax.lax.stop_gradient(self.s_std).astype(s_raw.dtype)
        shift = self.origin(halo, s, e, s_raw[1]) if self.origin is not None else jnp.zeros(3, dtype)
        x = _safe_norm(halo.r - shift[None, :])
        g = self.gnfw(x, halo.log10_M, halo.z)
        kl = jnp.zeros((), dtype)
        if self.aggregator is None:
            return g, kl
        rr = _safe_norm(halo.r, keepdims=True)
        feats = [rr, jnp.abs((halo.r / rr) @ e.T), jnp.broadcast_to(s, (x.size, s.size))]
        if self.local is not None:
            loc = jax.vmap(self.local, in_axes=(0, 0, 0, 0, None))(halo.local_q, halo.local_v, halo.local_mask,
                                                                   halo.n_local, e)
            feats.insert(0, loc)
        if self.stochastic is not None:
            mu, log_sigma = self.stochastic(halo.shell_residual, s)
            if latent == "prior":
                a = jax.random.normal(key, (), dtype) if key is not None else jnp.zeros((), dtype)
            else:
                a = mu + jnp.exp(log_sigma) * jax.random.normal(key, (), dtype) if key is not None else mu
            kl = 0.5 * (mu**2 + jnp.exp(2 * log_sigma) - 1.0) - log_sigma
            feats.append(jnp.broadcast_to(a, (x.size, 1)))
        feats = jnp.concatenate(feats, axis=-1).astype(dtype)
        if self.aggregator.needs_key():
            if key is None:
                raise ValueError("key is required in training mode (Aggregator dropout); "
                                 "evaluate eqx.nn.inference_mode(model) instead")
            # fold_in: the latent keeps `key` itself, so its draws do not depend on dropout
            kd = jax.random.split(jax.random.fold_in(key, 1), x.size)
            out = jax.vmap(lambda f, k: self.aggregator(f, key=k))(feats, kd)
        else:
            out = jax.vmap(self.aggregator)(feats)
        a1, a2 = out[:, 0], out[:, 1]
        k = jnp.exp(self.log_k.astype(dtype))
        return jax.nn.relu(g * jax.nn.relu(1.0 + a1) + k * jnp.sinh(jnp.clip(a2, -10.0, 10.0))), kl


def reconstruction_loss(P_hat: Float[Array, " n_t"], halo: HaloSample) -> Float[Array, ""]:
    """Seed 003 eq. (7): mean of ((P_e − P̂_e)/P_200)² over the valid targets (|r| < 2 R_200)."""
    m = halo.mask.astype(P_hat.dtype)
    return jnp.sum(m * (halo.P - P_hat) ** 2) / jnp.maximum(jnp.sum(m), 1.0)


def training_loss(model: PressureDeepSets, halos: HaloSample, key: PRNGKeyArray,
                  beta_kl: float | Float[Array, ""] = 0.0,
                  scalar_noise: Float[Array, "b n_s"] | None = None,
                  vector_rotation: Float[Array, "b n_e 3"] | None = None) -> Float[Array, ""]:
    """Batch mean of eq. (7) plus β_KL × KL (the conditional-VAE term); `halos` has a leading batch axis.

    `scalar_noise` (b, N_SCALARS): the eq. (6) noise of each halo's scalars (`scalar_noise`), or None.
    `vector_rotation` (b, N_VECTORS, 3): rotations of each halo's cluster vectors
    (`vector_rotation_noise`), or None. `key` also draws dropout masks in training mode.
    """
    b = halos.P.shape[0]
    keys = jax.random.split(key, b)
    noise = jnp.zeros((b, N_SCALARS), halos.r.dtype) if scalar_noise is None else scalar_noise
    rot = jnp.zeros((b, N_VECTORS, 3), halos.r.dtype) if vector_rotation is None else vector_rotation

    def one(h, k, d, w):
        P_hat, kl = model(h, key=k, scalar_noise=d, vector_rotation=w)
        rec = reconstruction_loss(P_hat, h)
        return rec + jnp.asarray(beta_kl).astype(rec.dtype) * kl.astype(rec.dtype)

    return jnp.mean(jax.vmap(one)(halos, keys, noise, rot))


def scalar_statistics(halos: HaloSample) -> tuple[Float[Array, " n_s"], Float[Array, " n_s"]]:
    """Mean and standard deviation (floored at 1e-6) of the cluster scalars s_α over a set of halos."""
    s = jax.vmap(lambda h: cluster_frame(h)[0])(halos)
    return jnp.mean(s, axis=0), jnp.maximum(jnp.std(s, axis=0), 1e-6)


def neighbour_gaps(halos: HaloSample) -> tuple[Float[Array, "n n_s"], Float[Array, "n n_s"]]:
    r"""Seed 003 eq. (6)'s $Δ_-, Δ_+$: for each halo and scalar s_α, the gap to the next smaller / larger training value.

    The values of each feature are sorted over the set; a halo's $Δ_-$ is its
    value minus the next smaller one, $Δ_+$ the next larger one minus its
    value. At the ends of the range the missing side takes the other side's gap
    (ties give 0: no noise towards an equal neighbour).

    Returns:
        (Δ_-, Δ_+), each (n_halo, N_SCALARS), ≥ 0.
    """
    s = jax.vmap(lambda h: cluster_frame(h)[0])(halos)
    if s.shape[0] < 2:
        raise ValueError(f"need >= 2 halos for nearest-neighbour gaps, got {s.shape[0]}")
    order = jnp.argsort(s, axis=0)
    v = jnp.take_along_axis(s, order, axis=0)
    gap = jnp.diff(v, axis=0)  # (n − 1, n_s)
    lower = jnp.concatenate([gap[:1], gap], axis=0)  # Δ_- of the sorted values (first: its Δ_+)
    upper = jnp.concatenate([gap, gap[-1:]], axis=0)  # Δ_+ (last: its Δ_-)
    inv = jnp.argsort(order, axis=0)
    return jnp.take_along_axis(lower, inv, axis=0), jnp.take_along_axis(upper, inv, axis=0)


def scalar_noise(key: PRNGKeyArray, delta_minus: Float[Array, "*b n_s"], delta_plus: Float[Array, "*b n_s"],
                 n_noise: float, n_noise_mass: float | None = None) -> Float[Array, "*b n_s"]:
    r"""Seed 003 eq. (6): $δ = N\,r\,Δ_{{
m sgn}(r)}$, $r \sim \mathcal N(0, 1)$, per halo and scalar.

    Args:
        key: PRNG key.
        delta_minus, delta_plus: the halos' gaps (`neighbour_gaps`, rows of a batch).
        n_noise: N for every scalar but log M (seed 003: O(10)).
        n_noise_mass: N for the log M scalar (index 0; seed 003: "somewhat lower"); default `n_noise`.

    Returns:
        δ, the shape of the gaps (add to the raw scalars: `PressureDeepSets(..., scalar_noise=δ)`).
    """
    r = jax.random.normal(key, delta_plus.shape, delta_plus.dtype)
    n_mass = n_noise if n_noise_mass is None else n_noise_mass
    N = jnp.full((delta_plus.shape[-1],), n_noise, delta_plus.dtype).at[0].set(n_mass)
    N = N.reshape((1,) * (delta_plus.ndim - 1) + N.shape)
    return N * r * jnp.where(r >= 0, delta_plus, delta_minus)


def loss_ratio_median(model: PressureDeepSets, benchmark: PressureDeepSets, halos: HaloSample,
                      latent: str = "posterior", key: PRNGKeyArray | None = None) -> tuple[Float[Array, ""], Float[Array, " n"]]:
    """Seed 003 eq. (8): L_opt = median over halos of L_recon[model] / L_recon[benchmark].

    Both models are evaluated in inference mode (no dropout); `key` draws only latents.

    Returns:
        (L_opt, the per-halo ratios).
    """
    model, benchmark = eqx.nn.inference_mode(model), eqx.nn.inference_mode(benchmark)
    keys = jax.random.split(key, halos.P.shape[0]) if key is not None else None

    def one(h, k):
        P_m, _ = model(h, key=k, latent=latent)
        P_b, _ = benchmark(h)
        return reconstruction_loss(P_m, h) / jnp.maximum(reconstruction_loss(P_b, h), 1e-30)

    ratios = jax.vmap(one)(halos, keys) if keys is not None else jax.vmap(lambda h: one(h, None))(halos)
    return jnp.median(ratios), ratios


def shell_means(x: np.ndarray, values: np.ndarray, n_shell: int) -> np.ndarray:
    """Means of `values` in `n_shell` linear radial shells of x = r/R_200 over [0, 2) (seed 003: 32 shells).

    Shells without a sample (coarse voxels, few targets) take the linear
    interpolation of the non-empty shells' means at the shell centres (the
    nearest one beyond the ends), so an empty shell does not read as zero residual.

    Args:
        x: (n,) radii [R_200].
        values: (n,) the values (e.g. P_e/P_200 residuals).
        n_shell: number of shells (≥ 1).

    Returns:
        (n_shell,) float64 means.
    """
    if n_shell < 1:
        raise ValueError(f"n_shell must be >= 1, got {n_shell}")
    shell = np.clip((np.asarray(x) / 2 * n_shell).astype(int), 0, n_shell - 1)
    cnt = np.bincount(shell, minlength=n_shell)
    mean = np.bincount(shell, np.asarray(values, np.float64), minlength=n_shell) / np.maximum(cnt, 1)
    full = cnt > 0
    if full.any() and not full.all():
        centre = (np.arange(n_shell) + 0.5) * 2.0 / n_shell
        mean = np.where(full, mean, np.interp(centre, centre[full], mean[full]))
    return mean


def halo_samples(
    pos: np.ndarray,
    vel_km_s: np.ndarray,
    pe_keV_cm3: np.ndarray,
    halo_pos: np.ndarray,
    halo_vel: np.ndarray,
    M200c: np.ndarray,
    R200c: np.ndarray,
    z: float,
    box_size: float,
    cosmo: Cosmology,
    *,
    n_particles: int = 512,
    n_targets: int = 512,
    n_neighbours: int = 32,
    r_local: float = 0.4,
    n_shell: int = 32,
    seed: int = 0,
) -> HaloSample:
    """Build `HaloSample`s (stacked, numpy float32) for the halos of one box.

    Args:
        pos: (n_ptcl, 3) comoving particle positions [h⁻¹ Mpc].
        vel_km_s: (n_ptcl, 3) peculiar velocities [km s⁻¹].
        pe_keV_cm3: (n, n, n) electron pressure n_e kT on the mesh [keV cm⁻³, physical]; cell i centred at iΔ.
        halo_pos: (n_h, 3) halo centres [h⁻¹ Mpc].
        halo_vel: (n_h, 3) halo bulk velocities [km s⁻¹].
        M200c: (n_h,) [h⁻¹ M☉].
        R200c: (n_h,) comoving [h⁻¹ Mpc].
        z: redshift.
        box_size: [h⁻¹ Mpc].
        cosmo: the box's `Cosmology` (h, Ω_b/Ω_m for P_200, ρ_c(z)).
        n_particles: particles within 2.5 R_200 kept per halo (sampled without replacement if more, with if fewer).
        n_targets: voxel targets within 2 R_200 (all if fewer; padding masked out; sampled if more).
        n_neighbours: K nearest particles per target for the Local module.
        r_local: Local module radius [h⁻¹ Mpc, comoving].
        n_shell: linear radial shells to 2 R_200 of the VAE input (seed 003: 32; `shell_means`).
        seed: sampling seed.

    Returns:
        `HaloSample` with a leading n_h axis.
    """
    from scipy.spatial import cKDTree

    from .profiles import battaglia12_pressure, pressure_200c

    rng = np.random.default_rng(seed)
    tree = cKDTree(np.mod(pos, box_size), boxsize=box_size)
    n = pe_keV_cm3.shape[0]
    cell = box_size / n
    h = float(cosmo.h)
    out = []
    for c, vb, M, R in zip(halo_pos, halo_vel, M200c, R200c):
        a = 1.0 / (1.0 + z)
        V200 = math.sqrt(_G_KM2_S2_MPC_PER_MSUN * (M / h) / (a * R / h))  # km/s, physical R
        idx = np.asarray(tree.query_ball_point(c, 2.5 * R), dtype=np.int64)
        take = rng.choice(idx, n_particles, replace=idx.size < n_particles)
        q = pos[take] - c
        q -= box_size * np.round(q / box_size)
        v = (vel_km_s[take] - vb) / V200
        # Targets: voxel centres within 2 R_200.
        span = int(math.ceil(2 * R / cell)) + 1
        i0 = np.round(c / cell).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(i - span, i + span + 1) for i in i0], indexing="ij"), -1).reshape(-1, 3)
        rel = grid * cell - c
        inside = np.sum(rel**2, -1) < (2 * R) ** 2
        grid, rel = grid[inside], rel[inside]
        if rel.shape[0] > n_targets:
            keep = rng.choice(rel.shape[0], n_targets, replace=False)
            grid, rel = grid[keep], rel[keep]
        nt = rel.shape[0]
        Pe = pe_keV_cm3[tuple(np.mod(grid, n).T)]
        P200 = float(pressure_200c(np.float64(M), z, cosmo))
        tpos = np.mod(c + rel, box_size)
        d, nb = tree.query(tpos, k=n_neighbours, distance_upper_bound=r_local)
        ok = np.isfinite(d)
        nb = np.where(ok, nb, 0)
        lq = pos[nb] - tpos[:, None, :]
        lq -= box_size * np.round(lq / box_size)
        lv = vel_km_s[nb]
        lv_mean = np.sum(lv * ok[..., None], 1, keepdims=True) / np.maximum(ok.sum(1), 1)[:, None, None]
        lv = np.where(ok[..., None], (lv - lv_mean) / V200, 0.0)
        lq = np.where(ok[..., None], lq / R, 0.0)
        n_loc = np.asarray(tree.query_ball_point(tpos, r_local, return_length=True), dtype=np.float32)
        # VAE input: residual to the published profile in shells to 2 R_200 (around the finder centre).
        x = np.sqrt(np.sum(rel**2, -1)) / R
        resid = Pe / P200 - np.asarray(battaglia12_pressure(x, np.float64(M), z, cosmo))
        shell_res = shell_means(x, resid, n_shell)

        def pad(arr, fill=0.0):
            width = [(0, n_targets - nt)] + [(0, 0)] * (arr.ndim - 1)
            return np.pad(arr, width, constant_values=fill)

        out.append(dict(q=q / R, v=v, r=pad(rel / R), local_q=pad(lq), local_v=pad(lv), local_mask=pad(ok, False),
                        n_local=pad(n_loc), log10_M=np.log10(M), z=z, shell_residual=shell_res,
                        P=pad(Pe / P200), mask=pad(np.ones(nt, bool), False)))
    if not out:
        raise ValueError("no halos given")
    stacked = {k: np.stack([o[k] for o in out]) for k in out[0]}
    return HaloSample(**{k: jnp.asarray(v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in stacked.items()})


MODULE_LABELS = ("gnfw", "origin", "local", "stochastic", "aggregator", "k")


def module_labels(model: PressureDeepSets) -> PressureDeepSets:
    """The model's pytree with every leaf replaced by its module's label (`MODULE_LABELS`; for `optax.multi_transform`).

    `log_k` is labelled "k"; the fixed scalar normalisation (`s_mean`, `s_std`)
    "frozen"; absent modules (None) have no leaves. Works on a filtered model
    (`eqx.filter(model, eqx.is_inexact_array)`: the None leaves stay None).
    """
    labels = jax.tree.map(lambda _: "frozen", model)
    for name in MODULE_LABELS[:-1]:
        sub = getattr(model, name)
        if sub is not None:
            labels = eqx.tree_at(lambda m, n=name: getattr(m, n), labels, jax.tree.map(lambda _, n=name: n, sub),
                                 is_leaf=lambda x: x is None)
    return eqx.tree_at(lambda m: m.log_k, labels, "k", is_leaf=lambda x: x is None)


def pressure_optimizer(steps: int, learning_rate: float, module_learning_rates: dict[str, float] | None = None,
                       weight_decay: float = 1e-2, decay_modules: tuple[str, ...] = ("aggregator", "origin"),
                       clip: float = 1.0):
    """The optax transformation of `fit_pressure_model` (for params = `eqx.filter(model, eqx.is_inexact_array)`).

    Global-norm clipping at `clip`, then per module label (`module_labels`,
    `optax.multi_transform`) Adam with the one-cycle schedule of peak
    `learning_rate` × the label's factor, AdamW-style decoupled decay of the weight
    matrices (ndim ≥ 2) for `decay_modules`, and no update for the frozen scalar
    normalisation. Arguments as in `fit_pressure_model`.
    """
    import optax

    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    factors = dict(module_learning_rates or {})
    bad = [k for k in (*factors, *decay_modules) if k not in MODULE_LABELS]
    if bad or any(f < 0 for f in factors.values()):
        raise ValueError(f"module_learning_rates / decay_modules: labels must be in {MODULE_LABELS} and factors "
                         f">= 0, got {factors}, {decay_modules}")
    sched = optax.cosine_onecycle_schedule(steps, learning_rate)

    def module_opt(label):
        lr = lambda c, f=factors.get(label, 1.0): f * sched(c)
        if label in decay_modules and weight_decay > 0:
            # decay weight matrices only (not biases, layer-norm gains, GNFW parameters)
            return optax.adamw(lr, weight_decay=weight_decay,
                               mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
        return optax.adam(lr)

    transforms = {label: module_opt(label) for label in MODULE_LABELS}
    transforms["frozen"] = optax.set_to_zero()
    return optax.chain(optax.clip_by_global_norm(clip), optax.multi_transform(transforms, module_labels))


def fit_pressure_model(
    model: PressureDeepSets,
    train: HaloSample,
    *,
    key: PRNGKeyArray,
    steps: int = 500,
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    module_learning_rates: dict[str, float] | None = None,
    weight_decay: float = 1e-2,
    decay_modules: tuple[str, ...] = ("aggregator", "origin"),
    beta_kl: float = 1e-3,
    clip: float = 1.0,
    n_noise: float = 0.0,
    n_noise_mass: float | None = None,
    rotation_deg: float = 2.0,
) -> tuple[PressureDeepSets, np.ndarray]:
    """Train with Adam (one-cycle schedule, gradient clipping, seed 003 §3) on random halo batches.

    The KL weight is annealed linearly from 0 to `beta_kl` over the run (seed 003).
    With `n_noise` > 0 each batch's cluster scalars get seed 003's eq. (6) noise
    (`neighbour_gaps` over `train`, `scalar_noise`; `n_noise_mass` for log M); with
    `rotation_deg` > 0 each halo's cluster vectors e_α are rotated by angles
    ~ N(0, rotation_deg²) about isotropic axes (seed 003 §3: ~2°). Dropout is
    active (the model is trained in training mode; `loss_ratio_median` evaluates
    in inference mode).

    Args:
        learning_rate: peak of the one-cycle schedule [per step].
        module_learning_rates: factor on `learning_rate` per module label (`MODULE_LABELS`;
            missing labels: 1). Seed 003 uses different rates per module but gives no values,
            so the default is 1 for all.
        weight_decay: decoupled (AdamW) weight decay of the weight matrices of `decay_modules`,
            ≥ 0 (seed 003 decays the modules with cluster-scale input, Aggregator and Origin,
            with no value given; 1e-2 is AdamW's customary default, our choice).
        decay_modules: module labels that get weight decay.
        rotation_deg: standard deviation of the e_α rotation angles [deg], ≥ 0.

    Returns:
        (trained model, in training mode; (steps,) training losses).
    """
    import optax

    n = train.P.shape[0]
    if n < 1 or steps < 1:
        raise ValueError(f"need >= 1 training halo and step, got {n} halos, steps = {steps}")
    if n_noise < 0 or (n_noise_mass is not None and n_noise_mass < 0):
        raise ValueError(f"n_noise = {n_noise}, n_noise_mass = {n_noise_mass} must be >= 0")
    if rotation_deg < 0:
        raise ValueError(f"rotation_deg must be >= 0, got {rotation_deg}")
    opt = pressure_optimizer(steps, learning_rate, module_learning_rates, weight_decay, decay_modules, clip)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)
    gaps = neighbour_gaps(train) if n_noise > 0 and n > 1 else None

    @jax.jit
    def step(params, state, i, k):
        kb, kl, kn = jax.random.split(k, 3)
        idx = jax.random.choice(kb, n, (min(batch_size, n),), replace=n < batch_size)
        batch = jax.tree.map(lambda x: x[idx], train)
        beta = (beta_kl / steps) * i.astype(jnp.result_type(float))
        noise = None if gaps is None else scalar_noise(kn, gaps[0][idx], gaps[1][idx], n_noise, n_noise_mass)
        rot = (None if rotation_deg == 0 else
               vector_rotation_noise(jax.random.fold_in(k, 3), idx.shape, rotation_deg, train.r.dtype))
        loss, grads = jax.value_and_grad(
            lambda p: training_loss(eqx.combine(p, static), batch, kl, beta, noise, rot))(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's int32 step counters
            updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i, k in enumerate(jax.random.split(key, steps)):
        params, state, loss = step(params, state, jnp.asarray(i), k)
        losses.append(float(loss))
    return eqx.combine(params, static), np.asarray(losses)
