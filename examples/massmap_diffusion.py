"""Train a score-based diffusion model (seed 002) and reconstruct a mass map as a posterior mean.

Data as in ``examples/massmap_unet.py`` (the SYNTHETIC cutout set with
``--data``, else toy clusters). A small `NCSNpp` learns the score of the
projected mass map conditioned on the (SZ, X-ray) maps by denoising score
matching on the VE SDE; for a few test clusters, ``--n-samples`` maps are drawn
with the predictor–corrector sampler, and their mean is compared with the
truth: total-mass fractional error, b(k) and r(k) at the largest scale, and the
spread of the standardised pixel errors.

    python examples/massmap_diffusion.py [--steps 500] [--n-samples 50] [--data cutouts.h5]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.fields import (
    NCSNpp, VESDE, FitConfig, ScoreModel, bias_k, cross_correlation_k, dsm_loss, fit, posterior_samples,
    predictor_corrector, standardised_pixel_errors, total_mass_fractional_error,
)
from massmap_unet import load


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500, help="training steps")
    ap.add_argument("--n-pix", type=int, default=32, help="toy map side (ignored with --data)")
    ap.add_argument("--data", default=None, help="a cutout HDF5 file (make_cutout_dataset)")
    ap.add_argument("--n-test", type=int, default=4, help="test clusters reconstructed")
    ap.add_argument("--n-samples", type=int, default=50, help="posterior samples per cluster (seed 002: 50)")
    ap.add_argument("--sampler-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    train, valid, test = load(args)
    sde = VESDE(1e-3, 1.0)
    model = eqx.filter_jit(lambda k: ScoreModel(NCSNpp(1, 2, base_channels=8, channel_mult=(1, 2), key=k), sde))(
        jax.random.key(args.seed))

    def loss(m, b, k):
        return dsm_loss(m, b[1], b[0], key=k)

    res = fit(model, loss, train, valid, FitConfig(max_steps=args.steps, batch_size=16, learning_rate=2e-3,
                                                   eval_every=max(args.steps // 10, 1)))
    print(f"trained {res.steps} steps; validation DSM loss {res.valid_loss[0]:.4f} -> {res.valid_loss.min():.4f}")
    draw = eqx.filter_jit(lambda m, c, k: posterior_samples(m, c, key=k, n_samples=args.n_samples,
                                                            sampler=predictor_corrector, n_steps=args.sampler_steps))
    views, mass = test
    for i in range(min(args.n_test, views.shape[0])):
        s = draw(res.model, views[i], jax.random.key(100 + i))  # (n_samples, 1, n, n)
        mean = jnp.mean(s, axis=0)
        dm = float(total_mass_fractional_error(mean[0], mass[i, 0]))
        _, b = bias_k(mean[0], mass[i, 0])
        _, r = cross_correlation_k(mean[0], mass[i, 0])
        eps = standardised_pixel_errors(s[:, 0], mass[i, 0])
        print(f"cluster {i}: total-mass error {dm:+.3f}, b(k_min) {float(b[0]):.3f}, r(k_min) {float(r[0]):.3f}, "
              f"std of standardised pixel errors {float(np.std(np.asarray(eps))):.2f}")


if __name__ == "__main__":
    main()
