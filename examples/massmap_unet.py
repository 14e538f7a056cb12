"""Train the multi-view U-Net (seed 004) to map SZ and X-ray cluster maps to the projected mass map.

Data: the SYNTHETIC cutout set of `jaxcluster.fields.make_cutout_dataset` when
``--data`` names one (inputs y, X-ray SB; target projected DM, normalised), else
toy clusters made here: cored profiles of random core radius and amplitude with
y ∝ Σ^1.5 and X-ray ∝ Σ² plus noise (a known map → mass relation). The
network is trained with random view dropout, then evaluated with each subset of
views; printed: the L1 loss and the median enclosed-mass bias at 8 pixels.

    python examples/massmap_unet.py [--steps 300] [--n-pix 32] [--data cutouts.h5]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.fields import FitConfig, MultiViewUNet, fit, load_cutouts, radial_mass_bias, unet_loss


def toy_clusters(key, n, n_pix):
    """(views, mass): cored profiles; y ∝ Σ^1.5, X-ray ∝ Σ², 2 % noise; all in [0, 1]."""
    k1, k2, k3 = jax.random.split(key, 3)
    c = jnp.arange(n_pix, dtype=jnp.float32) - (n_pix - 1) / 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    rc = jax.random.uniform(k1, (n, 1, 1), jnp.float32, 0.05, 0.2) * n_pix
    amp = jax.random.uniform(k2, (n, 1, 1), jnp.float32, 0.3, 1.0)
    mass = amp / (1.0 + r2[None] / rc**2)
    views = jnp.stack([mass**1.5, mass**2], axis=1)
    views = views + 0.02 * jax.random.normal(k3, views.shape, jnp.float32)
    return views, mass[:, None]


def load(args):
    if args.data is None:
        v, m = toy_clusters(jax.random.key(args.seed), 96, args.n_pix)
        return (v[:64], m[:64]), (v[64:80], m[64:80]), (v[80:], m[80:])
    s = load_cutouts(args.data)
    out = []
    for split in ("train", "val", "test"):
        t = jnp.asarray(s.normalised(split))
        out.append((t[:, :2], t[:, 3:4]))
    return tuple(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--n-pix", type=int, default=32, help="toy map side (ignored with --data)")
    ap.add_argument("--data", default=None, help="a cutout HDF5 file (make_cutout_dataset)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    train, valid, test = load(args)
    net = eqx.filter_jit(lambda k: MultiViewUNet(2, 1, base_channels=8, depth=2, key=k))(jax.random.key(args.seed))

    def loss(m, b, k):
        return unet_loss(m, b[0], b[1], key=k)

    res = fit(net, loss, train, valid, FitConfig(max_steps=args.steps, batch_size=16, learning_rate=3e-3,
                                                 eval_every=max(args.steps // 10, 1)))
    print(f"trained {res.steps} steps; validation L1 {res.valid_loss[0]:.4f} -> {res.valid_loss.min():.4f}")
    predict = eqx.filter_jit(jax.vmap(lambda m, v, mask: m(v, mask), in_axes=(None, 0, None)))
    views, mass = test
    n_pix = views.shape[-1]
    print("views        L1 (norm.)  median M(<R) bias, R = n_pix/4")
    for label, mask in (("SZ only", [True, False]), ("X-ray only", [False, True]), ("SZ + X-ray", [True, True])):
        pred = predict(res.model, views, jnp.asarray(mask))
        l1 = float(jnp.mean(jnp.abs(pred - mass)))
        bias = radial_mass_bias(pred[:, 0], mass[:, 0], jnp.asarray([n_pix / 4], jnp.float32))
        print(f"{label:12s} {l1:10.4f}  {float(np.median(np.asarray(bias))):+.3f}")


if __name__ == "__main__":
    main()
