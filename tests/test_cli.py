"""The command line: the main job on tiny settings, bad input, forwarded subcommands."""

import json
import subprocess
import sys


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "jaxcluster", *args], capture_output=True, text=True, timeout=timeout)


def test_run_writes_outputs(tmp_path):
    res = _cli("run", "--out", str(tmp_path), "--particles", "16", "--box", "128", "--steps", "3")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["particles"] == [16, 16, 16] and summary["mesh"] == [32, 32, 32]
    prov = summary["provenance"]
    assert prov["command"] == "run" and prov["seed"] == 0 and prov["theta"] == {"Omega_m": 0.3, "sigma_8": 0.8}
    assert len(repr(summary["sigma_delta"])) <= 12  # clean_json: no float32 noise digits
    header = (tmp_path / "power_spectrum.txt").read_text().splitlines()[0]
    assert header.startswith("# jaxcluster") and "seed 0" in header and "Omega_m = 0.3" in header
    assert (tmp_path / "pm_density_and_power.png").stat().st_size > 10_000
    rows = [line for line in (tmp_path / "power_spectrum.txt").read_text().splitlines() if not line.startswith("#")]
    k, P = zip(*[(float(r.split()[0]), float(r.split()[1])) for r in rows])
    assert all(p > 0 for p in P) and list(k) == sorted(k)


def test_bad_parameter_is_one_clear_line(tmp_path):
    res = _cli("run", "--out", str(tmp_path), "--omega-m", "0.7")
    assert res.returncode == 2
    assert "Omega_m" in res.stderr and "[0.1, 0.5]" in res.stderr and "Traceback" not in res.stderr


def test_forwarded_subcommands():
    assert _cli("fisher", "--help").returncode == 0
    assert _cli("tables", "build", "--help").returncode == 0
    res = _cli("tables")
    assert res.returncode == 2 and "tables build" in res.stderr
