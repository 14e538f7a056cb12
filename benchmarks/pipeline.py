"""Survey forward model: per-stage times of one box, and deg² per second for whole lightcones.

    python benchmarks/pipeline.py [--area 1] [--repeats 3] [--out benchmarks/results/pipeline.json]
    python benchmarks/pipeline.py --quick

One lightcone of `--area` deg² at seed 001's resolution (0.39 h⁻¹ Mpc, 12
boxes from z = 0.1 to 0.5, 10 PM steps from z = 6, 1′ pixels), float32, the
shipped eLDL and the EPIC-pn table. Stages of one box (box 6), each jitted
on its own and timed after a warm-up (median of repeats): initial
conditions + 2LPT, the PM run, the eLDL, count rates + projection +
resampling (`box_maps` minus the eLDL), detection with sep (host callback)
and with the JAX detector, source measurement. Then `simulate_xod` for the
whole lightcone (all boxes, sep detection), from which `deg2_per_second_cpu`
follows, and the extrapolation to seed 001's 200 deg² (10 × 20 deg²) by
volume (the per-box cost scales with the number of voxels; 20 deg² has
(287² × 242) / (n_⊥² × n_∥) times more per box). On a GPU the script also
writes `xod_200deg2_seconds_gpu` when run there with `--area 20 --lightcones 10`.
No GPU was available when the results file was written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxcluster as jc
from jaxcluster.baryons import default_eldl
from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import linear_field, lpt, nbody, white_noise
from jaxcluster.survey import box_layout, measure_sources, segment_components, segment_sep, seed001_survey
from jaxcluster.survey.maps import box_maps
from jaxcluster.xray import default_emissivity_table


def _time(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))  # warm-up (compilation)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--area", type=float, default=1.0, help="lightcone area [deg²]")
    ap.add_argument("--lightcones", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="0.25 deg², 1 repeat, results/pipeline_quick.json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.area, args.repeats = 0.25, 1
    out = Path(args.out or Path(__file__).parent / "results" / ("pipeline_quick.json" if args.quick else "pipeline.json"))

    theta = jc.ThetaSim()
    config = jc.SurveyConfig(area_deg2=args.area, n_lightcones=args.lightcones, omega_m_min=0.3, omega_m_max=0.3)
    g = config.geometry
    pm = g.pm_config()
    cosmo = Cosmology.from_theta(theta)
    lay = box_layout(cosmo, g)
    b = 6
    z, chi, depth = lay.z[b], lay.chi[b], lay.depth
    eldl, table = default_eldl(), default_emissivity_table()
    key = jax.random.key(0)
    a_init = 1.0 / 7.0
    frac = jnp.linspace(0.0, 1.0, config.n_steps + 1)

    @jax.jit
    def ic(key):
        growth = growth_table(cosmo)
        return lpt(linear_field(white_noise(key, pm.particle_shape), cosmo, pm), cosmo, growth, pm, a_init)

    @jax.jit
    def run_pm(pos, p):
        a_box = 1.0 / (1.0 + z)
        return nbody(pos, p, cosmo, pm, a_init + (a_box - a_init) * frac, growth=growth_table(cosmo)).pos[-1]

    paint = jax.jit(lambda pos: eldl(pos, theta, z, g.box_size, g.mesh_shape))
    maps_fn = jax.jit(lambda pos: box_maps(pos, theta, z, chi, depth, g, eldl, table, cosmo))
    thr = config.detection.pixel_threshold(g)
    sep_fn = jax.jit(lambda m: segment_sep(m, thr, config.detection))
    jax_fn = jax.jit(lambda m: segment_components(m, thr, config.detection.min_area, config.detection.max_sources,
                                                  config.detection.deblend_cont))
    measure = jax.jit(lambda s, m: measure_sources(s, m, g, z, config.detection.max_sources))

    r = args.repeats
    stages = {}
    stages["ic_2lpt_s"] = _time(ic, key, repeats=r)
    pos, p = ic(key)
    stages["pm_s"] = _time(run_pm, pos, p, repeats=r)
    pos_f = run_pm(pos, p)
    stages["eldl_s"] = _time(paint, pos_f, repeats=r)
    stages["eldl_plus_maps_s"] = _time(maps_fn, pos_f, repeats=r)
    stages["maps_s"] = max(stages["eldl_plus_maps_s"] - stages["eldl_s"], 0.0)
    maps = maps_fn(pos_f)
    det = jnp.sum(maps.count_rate, axis=-1)
    stages["detect_sep_s"] = _time(sep_fn, det, repeats=r)
    stages["detect_jax_s"] = _time(jax_fn, det, repeats=r)
    stages["measure_s"] = _time(measure, sep_fn(det), maps.count_rate, repeats=r)

    xod_fn = jax.jit(lambda th, k: jc.simulate_xod(th, k, config, eldl=eldl, table=table))
    t0 = time.perf_counter()
    jax.block_until_ready(xod_fn(theta, key))
    compile_and_run = time.perf_counter() - t0
    survey_s = _time(xod_fn, theta, jax.random.key(1), repeats=max(1, r - 1))
    platform_kind = jax.devices()[0].platform
    seed001 = seed001_survey().geometry
    scale = (seed001.n_perp**2 * seed001.n_par) / (g.n_perp**2 * g.n_par)
    result = {
        "problem": {"area_deg2_per_lightcone": g.area_deg2, "n_lightcones": config.n_lightcones,
                    "mesh_per_box": list(g.mesh_shape), "n_boxes": g.n_boxes, "cell_size": g.cell_size,
                    "n_pix": g.n_pix, "n_steps": config.n_steps, "dtype": str(jnp.result_type(float)),
                    "stage_box": b, "stage_box_z": float(z)},
        "per_box_stage_seconds": stages,
        "survey_seconds": survey_s,
        "survey_seconds_first_call_with_compile": compile_and_run,
        f"deg2_per_second_{platform_kind}": config.area_deg2 / survey_s,
        "seed001_200deg2_extrapolated_seconds": survey_s / config.n_lightcones * 10 * scale,
        "seed001_extrapolation": "survey_seconds per lightcone × 10 lightcones × voxel ratio "
                                 f"{scale:.1f} (287²×242 per 20 deg² box vs {g.n_perp}²×{g.n_par})",
        "environment": {"platform": platform_kind, "device": str(jax.devices()[0]), "jax": jax.__version__,
                        "cpu_count": os.cpu_count(), "machine": platform.machine(),
                        "note": "shared machine; a concurrent eLDL training may have held ~1 core"},
    }
    if platform_kind == "gpu" and g.area_deg2 == 20.0 and config.n_lightcones == 10:
        result["xod_200deg2_seconds_gpu"] = survey_s
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
