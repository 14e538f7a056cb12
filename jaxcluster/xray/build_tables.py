"""Build the shipped emissivity tables: ``python -m jaxcluster.xray.build_tables``.

Reproduces ``jaxcluster/data/emissivity_pn_default.npz`` from the XMM-Newton
EPIC-pn canned response (thin filter, AO20) or any (ARF, RMF) pairs::

    python -m jaxcluster.xray.build_tables --arf pn.arf --rmf pn.rmf -o table.npz

Without ``-o`` the file goes to ``./emissivity_pn_default.npz`` in the
current directory, never over the installed package's table; to refresh the
shipped table, name it: ``-o jaxcluster/data/emissivity_pn_default.npz``.
The file is written atomically (temporary name, fsync, rename): a kill
leaves the previous file, whole.

Several ``--arf/--rmf`` pairs add up (e.g. MOS1, MOS2, pn). The file holds
the count-rate table ("count_rate"), the energy-flux table ("energy_flux")
and the band-collapsed response it was built from ("response:pn"), with
the spectral method, AtomDB version (or "continuum only"), abundances,
response file names, bands and grids. The CLI (``jaxcluster tables build``)
calls `main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from .emissivity import (
    DEFAULT_BANDS_KEV,
    DEFAULT_ENERGY_BANDS_KEV,
    DEFAULT_T_KEV_RANGE,
    DEFAULT_N_T,
    DEFAULT_N_Z,
    DEFAULT_Z_RANGE,
    build_emissivity_table,
    build_energy_table,
    save_emissivity_tables,
)
from .response import band_response, read_response, sum_responses

__all__ = ["main", "DEFAULT_ARF", "DEFAULT_RMF"]

# Where the maintainers keep the canned pn response (not shipped, not needed at run time).
DEFAULT_ARF = "/work/shared/data/xmm/pn-thin-5-ao20.arf"
DEFAULT_RMF = "/work/shared/data/xmm/pn-thin-5-ao20.rmf"


def _bands(text: str) -> tuple[tuple[float, float], ...]:
    try:
        out = tuple(tuple(float(x) for x in b.split("-")) for b in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bands {text!r}: expected e.g. 0.5-1,1-2") from err
    if any(len(b) != 2 for b in out):
        raise argparse.ArgumentTypeError(f"bands {text!r}: expected e.g. 0.5-1,1-2")
    return out


def _band_text(bands) -> str:
    return ",".join(f"{lo:g}-{hi:g}" for lo, hi in bands)


def _parser() -> argparse.ArgumentParser:
    from ..clihelp import HelpFormatter

    p = argparse.ArgumentParser(prog="jaxcluster tables build", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--arf", action="append",
                   help="ARF file (repeat, one per --rmf) (default: the maintainers' XMM-Newton pn thin-filter ARF)")
    p.add_argument("--rmf", action="append", help="RMF file (repeat, one per --arf) (default: the matching pn RMF)")
    p.add_argument("-o", "--output", default=None,
                   help="output .npz (default: ./emissivity_pn_default.npz in the current directory; the package's "
                   "shipped table is only replaced when named here)")
    p.add_argument("--bands", type=_bands, default=DEFAULT_BANDS_KEV,
                   help=f"observer-frame count-rate bands [keV] (default: {_band_text(DEFAULT_BANDS_KEV)})")
    p.add_argument("--energy-bands", type=_bands, default=DEFAULT_ENERGY_BANDS_KEV,
                   help=f"observer-frame energy-flux bands [keV] (default: {_band_text(DEFAULT_ENERGY_BANDS_KEV)})")
    p.add_argument("--T-min", type=float, default=DEFAULT_T_KEV_RANGE[0], help="lowest temperature knot [keV]")
    p.add_argument("--T-max", type=float, default=DEFAULT_T_KEV_RANGE[1], help="highest temperature knot [keV]")
    p.add_argument("--n-T", type=int, default=DEFAULT_N_T, help="log-spaced temperature knots (≥ 4)")
    p.add_argument("--z-min", type=float, default=DEFAULT_Z_RANGE[0], help="lowest redshift knot")
    p.add_argument("--z-max", type=float, default=DEFAULT_Z_RANGE[1], help="highest redshift knot")
    p.add_argument("--n-z", type=int, default=DEFAULT_N_Z, help="linearly spaced redshift knots (≥ 4)")
    p.add_argument("--metallicity", type=float, default=0.3, help="metals relative to solar, Z/Z☉ (AG89 abundances)")
    p.add_argument("--method", choices=("auto", "apec", "brems"), default="auto",
                   help="spectral model: apec (AtomDB lines + continuum), brems (continuum only), "
                   "auto (apec when AtomDB is installed)")
    p.add_argument("--atomdb-dir", default=None, help="AtomDB directory (default: $ATOMDB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars over the redshift knots")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Build and write the tables; returns the exit status (0 on success).

    An entry point: it switches JAX to float64 (as the CLI does) so that the
    tables are stored at full precision.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    args = _parser().parse_args(argv)
    arfs = args.arf or [DEFAULT_ARF]
    rmfs = args.rmf or [DEFAULT_RMF]
    if len(arfs) != len(rmfs):
        print(f"error: {len(arfs)} --arf but {len(rmfs)} --rmf", file=sys.stderr)
        return 2
    if not (0 < args.T_min < args.T_max) or args.n_T < 4 or args.n_z < 4 or not (-1 < args.z_min < args.z_max):
        print("error: need 0 < T-min < T-max, -1 < z-min < z-max, n-T, n-z >= 4", file=sys.stderr)
        return 2
    output = args.output or "emissivity_pn_default.npz"
    def say(text: str) -> None:
        print(f"jaxcluster tables build: {text}", flush=True)

    try:
        say(f"reading {len(arfs)} response(s): {', '.join(os.path.basename(a) for a in arfs)} …")
        responses = [read_response(a, r) for a, r in zip(arfs, rmfs)]
        banded = [band_response(r, args.bands) for r in responses]
        T = np.geomspace(args.T_min, args.T_max, args.n_T)
        z = np.linspace(args.z_min, args.z_max, args.n_z)
        common = dict(T_keV=T, z=z, metallicity=args.metallicity, method=args.method, cache_dir=args.atomdb_dir,
                      progress=not args.no_progress)
        say(f"count-rate table: {args.n_T} T × {args.n_z} z spectra ({args.method}) …")
        table = build_emissivity_table(banded, bands_keV=args.bands, **common)
        say("energy-flux table …")
        energy = build_energy_table(bands_keV=args.energy_bands, **common)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    stored = {}
    if len(banded) == 1:
        stored["pn" if len(arfs) == 1 and args.arf is None else "instrument"] = banded[0]
    else:
        try:  # store the sum when the instruments share a grid
            stored["combined"] = band_response(sum_responses(responses), args.bands)
        except ValueError:
            pass
    save_emissivity_tables(
        output, {"count_rate": table, "energy_flux": energy}, band_responses=stored, metallicity=args.metallicity
    )
    say(
        f"wrote {os.path.normpath(output)}: method {table.method} ({table.atomdb_version}), "
        f"{T.size} T x {z.size} z, bands {table.bands_keV}, energy bands {energy.bands_keV}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
