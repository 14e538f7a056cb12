"""The example scripts run as scripts (small settings) and exit 0."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "script, args",
    [
        ("pm_sensitivity.py", ["--particles", "8", "--steps", "3"]),
        ("cluster_count_rate.py", ["--T", "3", "--z", "0.3"]),
        ("eldl_paint.py", ["--n-side", "32"]),
        # the derivative part compiles for ~1 min; tests/test_survey_maps.py checks soft-XOD gradients
        ("survey_xod.py", ["--area", "1", "--pixel", "6", "--steps", "2", "--no-grad"]),
        # 16 simulations: one chunk of 4 per host device, enough pairs for the compressor's and the MDN's batches
        ("npe_simulation.py", ["--n", "16", "--epochs", "3"]),
        # 240 training pairs: 216 after the 10 % held out, the fewest the default batch of 200 allows
        ("npe_analytic.py", ["--n-sim", "240", "--n-test", "20", "--n-draws", "100", "--max-epochs", "20",
                             "--out", "out/test_npe_analytic"]),
        # finite differences at fixed segmentation (autodiff compiles for minutes: tests/sensitivity covers it)
        ("sensitivity.py", ["--quick", "--keys", "2"]),
        ("pressure_deepsets.py", ["--n-side", "32", "--steps", "30"]),
        ("massmap_unet.py", ["--steps", "20", "--n-pix", "16"]),
        ("massmap_diffusion.py", ["--steps", "20", "--n-pix", "16", "--n-test", "1", "--n-samples", "4",
                                  "--sampler-steps", "10"]),
    ],
)
def test_example_runs(script, args, tmp_path):
    # run from a fresh folder: relative outputs (npe_analytic's out/...) never meet a previous run's files
    res = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip()
