"""Command line: `jaxcluster simulate` (the main job: a mock survey), `run` (a PM box), `tables build`, `fisher`, `hmc`, `data generate`, `eldl train`."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time


def _pencils_type(text: str) -> tuple[int, int]:
    """`--pencils PXxPY` → (Px, Py), both ≥ 1."""
    import argparse

    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"--pencils must be PXxPY with integers >= 1 (e.g. 2x4), got {text!r}")
    return int(parts[0]), int(parts[1])


def _run(args) -> int:
    import jax

    from .engines.distributed import gather, initialize_from_args, is_writer, writer_print

    if args.x64:
        jax.config.update("jax_enable_x64", True)  # opt-in at the entry point, never at import
    if args.pencils is not None and not args.distributed:
        raise ValueError("--pencils needs --distributed")
    distributed = initialize_from_args(args)  # before any computation starts the backend
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cosmology import Cosmology, growth_table, linear_power
    from .nbody import PMConfig, linear_field, lpt, nbody, paint_cic, step_grid, white_noise
    from .nbody.power import compensate_cic, power_spectrum
    from .params import ThetaSim
    from .plotting import plot_density_slice, plot_power_spectrum

    theta = ThetaSim(Omega_m=args.omega_m, sigma_8=args.sigma_8)  # validates against the prior
    cosmo = Cosmology.from_theta(theta)
    n = args.particles
    config = PMConfig(args.box, (n, n, n), mesh_shape=(args.mesh_factor * n,) * 3)
    out = pathlib.Path(args.out)
    if is_writer():
        out.mkdir(parents=True, exist_ok=True)

    @jax.jit
    def simulate(key, cosmo):
        growth = growth_table(cosmo)
        delta_lin = linear_field(white_noise(key, config.particle_shape), cosmo, config)
        pos, p = lpt(delta_lin, cosmo, growth, config, args.a_init, order=2)
        res = nbody(pos, p, cosmo, config, step_grid(args.a_init, 1.0, args.steps), growth=growth)
        rho = paint_cic(res.pos[-1] / config.cell_size, jnp.full(config.n_particles, float(config.mesh_factor**3), dtype=pos.dtype), config.mesh_shape)
        return rho - 1.0

    layout = ""
    if distributed:
        from .nbody.domain import (PencilDecomposition, SlabDecomposition, halo_for_box, paint_decomposed,
                                   pencil_mesh, simulate_decomposed)

        halo = halo_for_box(cosmo, config) if args.halo is None else args.halo
        if args.pencils is None:
            dec = SlabDecomposition(halo=halo)
            cut = f"x-slabs of {config.mesh_shape[0] // dec.n_devices} cells"
        else:
            dec = PencilDecomposition(pencil_mesh(*args.pencils), halo=halo)
            cut = (f"{args.pencils[0]} × {args.pencils[1]} pencils of {config.mesh_shape[0] // args.pencils[0]} × "
                   f"{config.mesh_shape[1] // args.pencils[1]} cells")
        dec.check(config.mesh_shape, config.particle_shape)
        layout = f" over {jax.process_count()} processes, {jax.device_count()} devices ({cut}, halo {halo})"

        def simulate(key, cosmo):  # noqa: F811 — the decomposed chain; the same key gives the same box
            res = simulate_decomposed(key, cosmo, config, step_grid(args.a_init, 1.0, args.steps), decomposition=dec)
            x = res.pos[-1]
            mass = jnp.ones_like(x[:, 0]) * float(config.mesh_factor**3)
            rho = jax.jit(lambda x, m: paint_decomposed(x, m, config.box_size, config.mesh_shape, dec))(x, mass)
            return gather(rho) - 1.0  # the figure and P(k) need the mesh on process 0 (it is small here)

    writer_print(f"jaxcluster run: {n}³ particles, {args.mesh_factor * n}³ mesh, {args.steps} steps from "
                 f"a = {args.a_init:g}{layout}: compiling and running (one compiled call, no per-step progress) …",
                 flush=True)
    t0 = time.perf_counter()
    delta = jax.block_until_ready(jnp.asarray(simulate(jax.random.key(args.seed), cosmo)))
    wall = time.perf_counter() - t0
    if not is_writer():
        return 0
    box = config.box_size
    k, P, n_modes = power_spectrum(compensate_cic(delta), box)
    P_lin = linear_power(cosmo, k)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    plot_density_slice(delta, box, axes[0])
    axes[0].set_title(f"PM density at z = 0, {n}³ particles, {args.steps} steps")
    plot_power_spectrum(k, P, axes[1], P_linear=P_lin)
    axes[1].axvline(0.5 * 3.14159265 * n / args.box, color="grey", lw=0.8, ls=":")
    axes[1].set_title(r"$P(k)$ at z = 0 (dotted: $k_{\rm Nyq}/2$ of the particles)")
    fig.tight_layout()
    from .io.atomic import atomic_path, write_json

    with atomic_path(out / "pm_density_and_power.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    from .io.provenance import clean_json, provenance

    settings = dict(box_size=box, particles=config.particle_shape, mesh=config.mesh_shape, steps=args.steps,
                    a_init=args.a_init, x64=args.x64, processes=jax.process_count(), devices=jax.device_count(),
                    decomposed=distributed)
    prov = provenance("run", seed=args.seed, theta=dict(Omega_m=args.omega_m, sigma_8=args.sigma_8), settings=settings)
    with atomic_path(out / "power_spectrum.txt") as tmp, open(tmp, "w") as f:
        f.write(f"# {prov['software']}, `jaxcluster run` on {prov['date_utc']}: seed {args.seed}, "
                f"Omega_m = {args.omega_m:g}, sigma_8 = {args.sigma_8:g}, {n}^3 particles in {box[0]:g} h^-1 Mpc, "
                f"mesh {config.mesh_shape[0]}^3, {args.steps} steps from a = {args.a_init:g} (summary.json: full record)\n")
        f.write("# k [h/Mpc]  P(k) [h^-3 Mpc^3]  P_lin(k) [h^-3 Mpc^3]  n_modes\n")
        for row in zip(k.tolist(), P.tolist(), P_lin.tolist(), n_modes.tolist()):
            f.write("%.6e %.6e %.6e %d\n" % row)
    summary = dict(
        box_size=box, particles=config.particle_shape, mesh=config.mesh_shape, steps=args.steps,
        a_init=args.a_init, Omega_m=args.omega_m, sigma_8=args.sigma_8, seed=args.seed,
        wall_time_s_including_compile=wall, sigma_delta=float(jnp.std(delta)),
        outputs=["pm_density_and_power.png", "power_spectrum.txt"], provenance=prov,
    )
    write_json(out / "summary.json", clean_json(summary), indent=2)
    print(f"jaxcluster run: {n}³ particles, {args.steps} steps in {wall:.1f} s (with compilation); wrote {out}/")
    return 0


def _forwarded(command: str):
    """Entry points of subcommands that parse their own options."""
    if command == "tables":
        from .xray.build_tables import main as tables_main

        def tables(argv):
            if not argv or argv[0] != "build":
                print("usage: jaxcluster tables build [options]  (see `jaxcluster tables build --help`)", file=sys.stderr)
                return 2
            return tables_main(argv[1:]) or 0

        return tables
    if command == "fisher":
        from .analytic.cli import fisher_main

        return fisher_main
    if command == "data":
        from .baryons.cli import main as data_main

        return data_main
    if command == "simulate":
        from .survey.cli import main as simulate_main

        return simulate_main
    if command == "sensitivity":
        from .sensitivity.cli import main as sensitivity_main

        return sensitivity_main
    if command == "dataset":
        from .inference.cli import main as dataset_main

        return dataset_main
    if command == "npe":
        from .inference.npe_cli import main as npe_main

        return npe_main
    if command == "eldl":
        from .baryons.train import main as eldl_train_main

        def eldl(argv):
            if not argv or argv[0] != "train":
                print("usage: jaxcluster eldl train --cv DIR --lh DIR --out DIR  (see --help)", file=sys.stderr)
                return 2
            return eldl_train_main(argv[1:])

        return eldl
    from .analytic.cli import hmc_main

    return hmc_main


_FORWARDED = {
    "simulate": "mock X-ray survey (maps, catalogue, XOD, figures): `jaxcluster simulate [--out DIR] [options]`",
    "tables": "X-ray emissivity tables: `jaxcluster tables build [options]`",
    "fisher": "Fisher forecast of the analytic XOD model: `jaxcluster fisher --out DIR [options]`",
    "hmc": "NUTS posterior of the analytic XOD model: `jaxcluster hmc --out DIR [options]`",
    "data": "SYNTHETIC CAMELS-like training sets: `jaxcluster data generate {cv,lh} --out DIR [options]`",
    "sensitivity": "∂/∂θ_sim of the survey observables, simulation Fisher, CR–M vs θ: `jaxcluster sensitivity --out DIR [options]`",
    "eldl": "train the eLDL painter: `jaxcluster eldl train --cv DIR --lh DIR --out DIR [options]`",
    "dataset": "(θ, XOD) training sets, resumable: `jaxcluster dataset generate --simulator {analytic,survey} --n N --out FILE`",
    "npe": "neural posteriors: `jaxcluster npe train DATASET --out DIR`, `npe infer DIR --xod FILE`, `npe validate DIR --dataset FILE`",
}


def main(argv: list[str] | None = None) -> int:
    from .clihelp import HelpFormatter, seed_type

    parser = argparse.ArgumentParser(prog="jaxcluster", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="PM simulation on the shipped defaults: density slice and P(k) plot",
                         description="PM simulation (2LPT + FastPM) of one periodic box: density slice, P(k) against "
                         "linear theory, summary.json", formatter_class=HelpFormatter)
    run.add_argument("--out", default="jaxcluster_run", help="output directory (created)")
    run.add_argument("--box", type=float, default=256.0, help="box side [h⁻¹ Mpc]")
    run.add_argument("--particles", type=int, default=64, help="particles per side")
    run.add_argument("--mesh-factor", type=int, default=2, help="force-mesh cells per particle spacing")
    run.add_argument("--steps", type=int, default=10, help="FastPM steps from a_init to 1")
    run.add_argument("--a-init", type=float, default=0.1, help="scale factor of the 2LPT initial conditions")
    run.add_argument("--omega-m", type=float, default=0.3, help="Ω_m (prior range [0.1, 0.5])")
    run.add_argument("--sigma-8", type=float, default=0.8, help="σ_8 (prior range [0.6, 1.0])")
    run.add_argument("--seed", type=seed_type, default=0, help="seed of the initial conditions' white noise")
    run.add_argument("--x64", action="store_true", help="run in float64")
    from .engines.distributed import add_distributed_options

    add_distributed_options(run)
    run.add_argument("--pencils", type=_pencils_type, default=None, metavar="PXxPY",
                     help="with --distributed: cut x and y over a Px × Py device mesh (pencils, for more devices "
                     "than slabs; Px·Py = all devices) instead of x-slabs")
    run.set_defaults(func=_run)
    for name, text in _FORWARDED.items():  # listed in --help; dispatched before parsing
        sub.add_parser(name, help=text, add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _FORWARDED:  # their own parsers, so `--help` reaches them
        return _forwarded(argv[0])(argv[1:])
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad user input: one clear line, no traceback
        print(f"jaxcluster: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
