"""One box over 1, 2, 4 devices and 2 processes: memory per device and bytes sent per PM step; writes results/scaling.json.

Run:  python benchmarks/scaling.py [--quick]   (sets XLA_FLAGS for 4 host devices itself)

Measured, for the decomposed PM step of `jaxcluster.nbody.domain` (particles in
Lagrangian slabs, halo exchange, slab FFT) against the single-device engine:

* **Memory per device** from `compiled.memory_analysis()` of one KDK step
  (compile only, nothing allocated, so large boxes are fine on a laptop):
  particles = the step's arguments (positions and momenta), mesh = its
  temporaries (paint buffer, FFT layouts, padded φ). `memory_per_device_ratio_4`
  = (particles + mesh per device on 4 devices) / (the same on one device
  with `pm_force`). The halo is `halo_for_box` at z = 0 (6σ of the linear
  displacement).
* **RSS**: peak resident memory of processes running a small box on 1, 2, 4
  virtual devices in one process and on 2 processes × 2 devices
  (`jax.distributed`, gloo). Virtual CPU devices share one process, so RSS
  includes the runtime (~0.3–0.5 GB) and is a check, not the figure.
* **Bytes sent per PM step**, per device, read from the compiled HLO's
  collectives (`collective-permute`: operand bytes; `all-to-all`: operand
  bytes × (G−1)/G, G the devices of its replica group, P for slabs, Px or Py
  for a pencil transpose; `all-reduce`: operand bytes), against the model of what
  the decomposition must send: the paint overhangs and the three force
  components' padding (2h + 1 planes each) and four slab transposes of the
  complex half-spectrum (δ forward, three components back): `comm_over_model`.
* The same for the CIC paint alone (`paint_decomposed`, the eLDL's final paint).
* A projection of a 200 deg², z ≤ 1 survey on N H100s, stated as a model
  with its inputs.
* **Pencils** (`PencilDecomposition`, 2 × 2 devices): the same memory per
  device, against one device and against 4 slabs, and the bytes sent per KDK
  step against a halo-surface + transpose model (x overhangs over the
  y-padded width, y overhangs over the x block, and two transposes per
  3-D FFT, each sending (P−1)/P of the complex block along its device axis):
  `pencil_2x2`. The projection is repeated for pencils: how many H100s the
  farthest box can use when the halo need only fit n/Px and n/Py cells
  (`projection_200deg2_z1_pencils`).

CPU virtual devices share 2 cores here: no timings are reported.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcluster.cosmology import Cosmology  # noqa: E402
from jaxcluster.nbody import PMConfig, pm_force  # noqa: E402
from jaxcluster.nbody.domain import (  # noqa: E402
    PencilDecomposition, SlabDecomposition, halo_for_box, paint_decomposed, pencil_mesh, pm_force_decomposed,
    rms_displacement)
from jaxcluster.nbody.sharding import device_mesh  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "scaling.json"
DTYPE = jnp.float32  # what a GPU run uses
BYTES = {"f32": 4, "f64": 8, "c64": 8, "c128": 16, "s32": 4, "u32": 4, "pred": 1, "s64": 8, "u64": 8}


def _kdk(force):
    """One kick-drift-kick step (unit factors): the PM step whose memory and traffic we count."""
    def step(pos, p):
        p = p + 0.5 * force(pos)
        pos = pos + p
        return pos, p + 0.5 * force(pos)
    return step


def _compiled(fn, *shapes, shardings=None):
    args = [jax.ShapeDtypeStruct(s, DTYPE, sharding=None if shardings is None else shardings[i])
            for i, s in enumerate(shapes)]
    return jax.jit(fn).lower(*args).compile()


def _memory(compiled):
    m = compiled.memory_analysis()
    return dict(arguments=int(m.argument_size_in_bytes), outputs=int(m.output_size_in_bytes),
                temporaries=int(m.temp_size_in_bytes))


def _computations(hlo: str) -> dict[str, list[str]]:
    """The HLO module's computations by name (ENTRY under "ENTRY"), each as its instruction lines."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(ENTRY )?%?([\w.\-]+) \(", line)
        if head and not line.startswith(" "):
            name = "ENTRY" if head.group(1) else head.group(2)
            comps[name] = []
        elif name is not None and line.startswith("  "):
            comps[name].append(line)
    return comps


def _group_size(line: str, n_dev: int) -> int:
    """Devices in one replica group of a collective's HLO line ({{0,2},{1,3}}, or iota [groups,size]<=[n])."""
    m = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    if m:
        return len(m.group(1).split(","))
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
    return int(m.group(2)) if m else n_dev


def _sent_bytes(hlo: str, n_dev: int) -> dict[str, float]:
    """Bytes each device sends, per collective kind, from the compiled HLO text (module docstring).

    Collectives inside a `while` body count once per iteration (XLA's `known_trip_count`).
    """
    comps = _computations(hlo)
    kinds = ("collective-permute", "all-to-all", "all-reduce", "all-gather")

    def sent(name: str) -> dict[str, float]:
        out = dict.fromkeys(kinds, 0.0)
        for line in comps.get(name, []):
            # The result type sits between "=" and the op (operands are untyped names); for these ops it
            # has the operands' size (all-to-all: a tuple of the pieces).
            m = re.search(r"=\s*(.*?)\s(collective-permute|all-to-all|all-reduce|all-gather)(-start)?\(", line)
            if m:
                kind, operands = m.group(2), m.group(1)
                size = sum(BYTES[t] * math.prod(int(d) for d in dims.split(",") if d)
                           for t, dims in re.findall(r"\b(f32|f64|c64|c128|s32|u32|pred|s64|u64)\[([\d,]*)\]", operands))
                g = _group_size(line, n_dev)  # a pencil transpose runs within a row or column of the mesh
                out[kind] += size * ((g - 1) / g if kind in ("all-to-all", "all-gather") else 1.0)
            w = re.search(r"\swhile\(.*body=%?([\w.\-]+)", line)
            if w:
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                if trips is None:
                    raise ValueError(f"a while loop without a known trip count: {line[:200]}")
                for k, v in sent(w.group(1)).items():
                    out[k] += int(trips.group(1)) * v
        return out

    return sent("ENTRY")


def _decomposition(n_dev: int, halo: int, pencils: tuple[int, int] | None):
    if pencils is not None:
        return PencilDecomposition(pencil_mesh(*pencils, jax.devices()[:n_dev]), halo=halo)
    return SlabDecomposition(device_mesh("x", jax.devices()[:n_dev]), halo=halo)


def _step_figures(config: PMConfig, n_dev: int, halo: int, pencils: tuple[int, int] | None = None) -> dict:
    n_ptcl = config.n_particles
    if n_dev == 1:
        c = _compiled(_kdk(lambda x: pm_force(x, config)), (n_ptcl, 3), (n_ptcl, 3))
        return dict(memory=_memory(c), sent_bytes=_sent_bytes(c.as_text(), 1))
    dec = _decomposition(n_dev, halo, pencils)
    sh = [dec.particles, dec.particles]
    c = _compiled(_kdk(lambda x: pm_force_decomposed(x, config, dec)), (n_ptcl, 3), (n_ptcl, 3), shardings=sh)
    return dict(memory=_memory(c), sent_bytes=_sent_bytes(c.as_text(), n_dev))


def _step_model(config: PMConfig, n_dev: int, halo: int) -> float:
    """Bytes one device must send per KDK step (two force evaluations): the paint overhangs and the
    three force components' padding (2h + 1 planes each), and four slab transposes of the half-spectrum
    (δ forward, the three force components back)."""
    nx, ny, nz = config.mesh_shape
    plane = ny * nz * BYTES["f32"]
    halos = 4 * (2 * halo + 1) * plane
    transposes = 4 * (nx // n_dev) * ny * (nz // 2 + 1) * BYTES["c64"] * (n_dev - 1) / n_dev
    return 2 * (halos + transposes)


def _pencil_step_model(config: PMConfig, px: int, py: int, halo: int) -> float:
    """Bytes one device of a Px × Py pencil mesh must send per KDK step (two force evaluations).

    Halo surface: the paint's overhangs and the three force components' fills, each 2h + 1 cells along x
    over the y-padded width (x is exchanged first in the paint, last in the fill, which carries the corners)
    and 2h + 1 along y over the x block. Transposes: four 3-D FFTs (δ forward, three components back), each
    sending (Py−1)/Py of the complex block over 'y' and (Px−1)/Px of it over 'x' (the block has the same size
    in every layout: n_x/Px × n_y/Py × nzp, nzp = n_z/2 + 1 padded to a multiple of Py). Py = 1: `_step_model`.
    """
    nx, ny, nz = config.mesh_shape
    nxl, nyl, w = nx // px, ny // py, 2 * halo + 1
    wy = nyl + w if py > 1 else ny
    halos = 4 * ((w * wy * nz if px > 1 else 0) + (w * nxl * nz if py > 1 else 0)) * BYTES["f32"]
    nzp = -(-(nz // 2 + 1) // py) * py
    transposes = 4 * nxl * nyl * nzp * BYTES["c64"] * ((py - 1) / py + (px - 1) / px)
    return 2 * (halos + transposes)


def _paint_figures(config: PMConfig, n_dev: int, halo: int, pencils: tuple[int, int] | None = None) -> dict:
    n_ptcl = config.n_particles
    if n_dev == 1:
        from jaxcluster.nbody import paint_cic
        c = _compiled(lambda x, m: paint_cic(x, m, config.mesh_shape), (n_ptcl, 3), (n_ptcl,))
        return dict(memory=_memory(c), sent_bytes=_sent_bytes(c.as_text(), 1))
    dec = _decomposition(n_dev, halo, pencils)
    c = _compiled(lambda x, m: paint_decomposed(x, m, config.box_size, config.mesh_shape, dec), (n_ptcl, 3), (n_ptcl,),
                  shardings=[dec.particles, dec.particles])
    return dict(memory=_memory(c), sent_bytes=_sent_bytes(c.as_text(), n_dev))


def _per_device(mem: dict) -> dict:
    particles = mem["arguments"]  # positions and momenta (the outputs alias their updates)
    return dict(particles=particles, mesh=mem["temporaries"], total=particles + mem["temporaries"])


def _rss_child(n_dev: int, n_proc: int, pid: int, port: int, mesh: int) -> None:
    if n_proc > 1:
        from jaxcluster.engines.distributed import initialize
        initialize(f"localhost:{port}", n_proc, pid, timeout_s=120)
    from jaxcluster.nbody import step_grid
    from jaxcluster.nbody.domain import simulate_decomposed
    cfg = PMConfig(2.0 * mesh, mesh // 2, mesh)
    dec = SlabDecomposition(halo=min(halo_for_box(Cosmology(0.3, 0.8), cfg, a=0.6), mesh // jax.device_count() - 3))
    # /proc's VmHWM (this process's peak RSS), not ru_maxrss, which Linux carries over from the parent across exec.
    before = _vm_hwm_kb()
    simulate_decomposed(jax.random.key(0), Cosmology(0.3, 0.8), cfg, step_grid(0.1, 0.6, 2), decomposition=dec).pos.block_until_ready()
    peak = _vm_hwm_kb()
    print(json.dumps(dict(rss_before_kb=before, rss_peak_kb=peak, local_devices=len(jax.local_devices()))))


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _rss(n_dev: int, n_proc: int, mesh: int) -> dict:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev // n_proc}", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, __file__, "--rss-child", str(n_dev), str(n_proc), str(i), str(port),
                               str(mesh)], env=env, stdout=subprocess.PIPE, text=True) for i in range(n_proc)]
    outs = [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs]
    return dict(processes=n_proc, devices=n_dev, per_process=outs,
                peak_minus_before_per_device_mb=float(np.mean([(o["rss_peak_kb"] - o["rss_before_kb"]) / 1024 /
                                                               o["local_devices"] for o in outs])))


def _projection(bytes_per_cell: float) -> dict:
    """Memory of the largest box of a 200 deg², z ≤ 1 lightcone at seed 001's resolution, and H100s to hold it."""
    from jaxcluster.survey.lightcone import _chi_numpy
    area_deg2, z_max, n_boxes, cell = 200.0, 1.0, 12, 0.39
    chi_max, chi_min = float(_chi_numpy(0.3, z_max)), float(_chi_numpy(0.3, 0.1))
    side = math.sqrt(area_deg2) * math.pi / 180 * chi_max  # transverse size of the farthest box [h⁻¹ Mpc]
    depth = (chi_max - chi_min) / n_boxes
    n_perp, n_par = math.ceil(side / cell), math.ceil(depth / cell)
    cells = n_perp**2 * n_par
    sigma = rms_displacement(Cosmology(0.3, 0.8), (side, side, depth), cell)
    halo_cells = math.ceil(6 * sigma / cell) + 1  # as halo_for_box
    h100 = 80e9 * 0.8  # usable bytes of an H100 (80 GB, 20 % left to the runtime and fragmentation)
    out = dict(inputs=dict(area_deg2=area_deg2, z_max=z_max, boxes_per_lightcone=n_boxes, cell_h_inv_mpc=cell,
                           particles_per_cell=1, omega_m=0.3, bytes_per_cell_one_device=bytes_per_cell,
                           h100_usable_bytes=h100, halo_cells=halo_cells, rms_displacement_h_inv_mpc=sigma,
                           note="boxes run one after another, so the largest (farthest) box sets the memory; "
                                "bytes_per_cell is the measured single-device KDK step (particles + mesh)"),
               largest_box_cells=[n_perp, n_perp, n_par], largest_box_bytes_one_device=cells * bytes_per_cell)
    rows = []
    for n in (1, 2, 4, 8, 16, 32, 64):
        slab = n_perp / n
        # measured at 512³ on 4 devices: each halo cell adds ~10 planes' worth of mesh bytes (1/n_x of the
        # single-device step's mesh temporaries ≈ 8.4 meshes: so ≈ 1.2 × (h / slab) of the slab's bytes)
        per_dev = cells * bytes_per_cell / n * (1 + 1.2 * halo_cells / slab)
        rows.append(dict(h100s=n, bytes_per_device=per_dev, fits=bool(per_dev < h100 and halo_cells + 1 <= slab)))
    out["per_device"] = rows
    out["h100s_needed"] = next((r["h100s"] for r in rows if r["fits"]), None)
    return out


def _pencil_figures(cfg: PMConfig, halo: int, step: dict, paint: dict) -> dict:
    """The 2 × 2 pencil KDK step and paint, against one device and 4 slabs (`step`, `paint` from `main`)."""
    px = py = 2
    h = min(halo, cfg.mesh_shape[0] // px - 3, cfg.mesh_shape[1] // py - 3)
    f = _step_figures(cfg, 4, h, pencils=(px, py))
    f["per_device_bytes"] = _per_device(f["memory"])
    model = _pencil_step_model(cfg, px, py, h)
    sent = sum(f["sent_bytes"].values())
    f.update(halo_cells=h, model_bytes=model, sent_bytes_total=sent, comm_over_model=sent / model,
             slab_model_bytes_4=_step_model(cfg, 4, h))
    g = _paint_figures(cfg, 4, h, pencils=(px, py))
    g["per_device_bytes"] = dict(particles=g["memory"]["arguments"], mesh=g["memory"]["temporaries"] + g["memory"]["outputs"])
    nx, ny, nz = cfg.mesh_shape
    w = 2 * h + 1
    g_model = (w * (ny // py + w) * nz + w * (nx // px) * nz) * BYTES["f32"]  # overhangs along x, then y
    g.update(model_bytes=g_model, comm_over_model=sum(g["sent_bytes"].values()) / g_model)
    one, four = step[1]["per_device_bytes"], step[4]["per_device_bytes"]
    return dict(
        mesh_devices=[px, py], pm_step=f, paint=g,
        memory_per_device_ratio_4=f["per_device_bytes"]["total"] / one["total"],
        memory_per_device_ratio_4_mesh=f["per_device_bytes"]["mesh"] / one["mesh"],
        memory_over_4_slabs=f["per_device_bytes"]["total"] / four["total"],
        sent_over_4_slabs=sent / sum(step[4]["sent_bytes"].values()) if step[4]["halo_cells"] == h else None,
        model_check=dict(  # the projection's memory model against these measurements
            pencils_model_ratio_4=_padding_factor(nx / px, ny / py, h) / 4,
            pencils_measured_ratio_4=f["per_device_bytes"]["total"] / one["total"],
            slabs_model_ratio_4=_padding_factor(nx / 4, None, step[4]["halo_cells"]) / 4,
            slabs_measured_ratio_4=four["total"] / one["total"]),
    )


def _best_pencils(n: int, n_perp: int, halo: int, per_cell: float, cells: int) -> dict | None:
    """The Px × Py = n layout of the farthest box that holds the halo with the least memory per device."""
    best = None
    for px in range(n, 0, -1):  # ties go to more devices along x (x-slabs for Py = 1)
        if n % px:
            continue
        py = n // px
        nxl, nyl = n_perp / px, n_perp / py
        if (px > 1 and halo + 1 > nxl) or (py > 1 and halo + 1 > nyl):
            continue
        per_dev = cells * per_cell / n * _padding_factor(nxl if px > 1 else None, nyl if py > 1 else None, halo)
        if best is None or per_dev < best["bytes_per_device"]:
            best = dict(px=px, py=py, block_cells=[nxl, nyl], bytes_per_device=per_dev)
    return best


def _padding_factor(nxl: float | None, nyl: float | None, halo: int) -> float:
    """Per-device memory over the 1/N share: 1 + 0.6 × the padded buffers' extra area (None: an uncut axis).

    0.6: the padded share of the step's buffers, from the slab measurement at 512³ (1.2 h/slab for slabs,
    as `_projection`); `pencil_2x2.model_check` compares it with the 2 × 2 measurement."""
    fx = 1 + (2 * halo + 1) / nxl if nxl else 1.0
    fy = 1 + (2 * halo + 1) / nyl if nyl else 1.0
    return 1 + 0.6 * (fx * fy - 1)


def _projection_pencils(bytes_per_cell: float, slabs: dict) -> dict:
    """`_projection` for pencils: the farthest box over Px × Py H100s, the halo fitting n/Px and n/Py cells."""
    n_perp, _, n_par = slabs["largest_box_cells"]
    halo = slabs["inputs"]["halo_cells"]
    h100 = slabs["inputs"]["h100_usable_bytes"]
    cells = n_perp**2 * n_par
    rows = []
    for n in (4, 16, 32, 64, 128, 256, 512, 1024):
        best = _best_pencils(n, n_perp, halo, bytes_per_cell, cells)
        rows.append(dict(h100s=n, layout=None if best is None else f"{best['px']}x{best['py']}",
                         block_cells=None if best is None else best["block_cells"],
                         bytes_per_device=None if best is None else best["bytes_per_device"],
                         fits=bool(best is not None and best["bytes_per_device"] < h100)))
    slab_max = max(r["h100s"] for r in slabs["per_device"] if r["fits"])
    pencil_max = max(r["h100s"] for r in rows if r["fits"])
    return dict(
        inputs=dict(note="the farthest box of projection_200deg2_z1 (same inputs); the line of sight (z, "
                         f"{n_par} cells) is never cut; x and y ({n_perp} cells) cut in Px × Py with the halo "
                         f"({halo} cells) + 1 <= n/Px, n/Py; memory per device = share × _padding_factor "
                         "(1 + 0.6 × the extra padded area); divisibility of n by Px, Py ignored (the survey "
                         "rounds n_perp up)"),
        per_device=rows, max_h100s_slabs=slab_max, max_h100s_pencils=pencil_max,
        bytes_per_device_at_max_slabs=next(r["bytes_per_device"] for r in slabs["per_device"] if r["h100s"] == slab_max),
        bytes_per_device_at_max_pencils=next(r["bytes_per_device"] for r in rows if r["h100s"] == pencil_max),
    )


def main(quick: bool) -> None:
    cfg_small = PMConfig(256.0, 64, 128)
    cfg_large = PMConfig(1024.0, 256, 512) if not quick else cfg_small
    result = dict(
        note="Virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4) on 2 shared cores: memory "
             "and traffic are what the compiled per-device programs allocate and send (the same on GPUs up to "
             "layout); no timings. float32, one KDK step = two force evaluations.",
        jax=jax.__version__, platform=platform.platform(), dtype="float32")
    for name, cfg in (("128^3 mesh, 64^3 particles, 256 h^-1 Mpc", cfg_small),
                      ("512^3 mesh, 256^3 particles, 1024 h^-1 Mpc", cfg_large)):
        halo = halo_for_box(Cosmology(0.3, 0.8), cfg)
        step, paint = {}, {}
        for n_dev in (1, 2, 4):
            h = min(halo, cfg.mesh_shape[0] // n_dev - 3)
            f = _step_figures(cfg, n_dev, h)
            f["per_device_bytes"] = _per_device(f["memory"])
            f["halo_cells"] = h
            if n_dev > 1:
                model = _step_model(cfg, n_dev, h)
                sent = sum(f["sent_bytes"].values())
                f.update(model_bytes=model, sent_bytes_total=sent, comm_over_model=sent / model)
            step[n_dev] = f
            g = _paint_figures(cfg, n_dev, h)
            g["per_device_bytes"] = dict(particles=g["memory"]["arguments"], mesh=g["memory"]["temporaries"] + g["memory"]["outputs"])
            if n_dev > 1:
                model = (2 * h + 1) * cfg.mesh_shape[1] * cfg.mesh_shape[2] * BYTES["f32"]
                sent = sum(g["sent_bytes"].values())
                g.update(model_bytes=model, comm_over_model=sent / model)
            paint[n_dev] = g
        one, four = step[1]["per_device_bytes"], step[4]["per_device_bytes"]
        result[name] = dict(
            halo_for_box_cells=halo, pm_step=step, paint=paint,
            memory_per_device_ratio_4=four["total"] / one["total"],
            memory_per_device_ratio_4_particles=four["particles"] / one["particles"],
            memory_per_device_ratio_4_mesh=four["mesh"] / one["mesh"],
            memory_per_device_ratio_2=step[2]["per_device_bytes"]["total"] / one["total"],
            comm_over_model_4=step[4]["comm_over_model"],
            paint_memory_per_device_ratio_4=(paint[4]["per_device_bytes"]["particles"] + paint[4]["per_device_bytes"]["mesh"]) /
                                            (paint[1]["per_device_bytes"]["particles"] + paint[1]["per_device_bytes"]["mesh"]),
            paint_comm_over_model_4=paint[4]["comm_over_model"],
        )
        print(name, {k: v for k, v in result[name].items() if k.startswith(("memory", "comm", "paint_"))}, flush=True)
        result[name]["pencil_2x2"] = _pencil_figures(cfg, halo, step, paint)
        print(name, "pencils", {k: v for k, v in result[name]["pencil_2x2"].items() if not isinstance(v, dict)},
              flush=True)
    big = result["512^3 mesh, 256^3 particles, 1024 h^-1 Mpc"]
    result["memory_per_device_ratio_4"] = big["memory_per_device_ratio_4"]
    result["comm_over_model"] = big["comm_over_model_4"]
    pen = big["pencil_2x2"]
    result["pencil_2x2"] = dict(memory_per_device_ratio_4=pen["memory_per_device_ratio_4"],
                                memory_over_4_slabs=pen["memory_over_4_slabs"],
                                comm_over_model=pen["pm_step"]["comm_over_model"],
                                paint_comm_over_model=pen["paint"]["comm_over_model"])
    one = big["pm_step"][1]["per_device_bytes"]["total"] / math.prod(cfg_large.mesh_shape)
    result["projection_200deg2_z1"] = _projection(one)
    result["projection_200deg2_z1_pencils"] = _projection_pencils(one, result["projection_200deg2_z1"])
    mesh_rss = 64 if quick else 128
    result["rss"] = {f"{n} devices, 1 process": _rss(n, 1, mesh_rss) for n in (1, 2, 4)}
    result["rss"]["4 devices, 2 processes"] = _rss(4, 2, mesh_rss)
    result["rss_mesh"] = mesh_rss
    out = OUT.with_name("scaling_quick.json") if quick else OUT  # a rehearsal never overwrites the full file
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}: memory_per_device_ratio_4 = {result['memory_per_device_ratio_4']:.3f}, "
          f"comm_over_model = {result['comm_over_model']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        _rss_child(*(int(a) for a in sys.argv[2:7]))
    else:
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("--quick", action="store_true", help="small boxes only (a rehearsal)")
        main(ap.parse_args().quick)
