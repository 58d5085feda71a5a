"""The benchmark harness runs (``--quick`` sizes) and its baselines agree with ours: a smoke
test that keeps benchmarks/run.py from rotting when the library's signatures change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmarks_run_and_agree_with_their_baselines(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only",
         "features,scores,lds", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    by_name = {c["name"]: c for c in report["results"]}
    assert {"features", "features_structured", "scores", "scores_float32", "lds"} <= set(by_name)
    for name in ("features", "scores", "lds"):
        assert by_name[name]["ours"] > 0 and by_name[name]["baseline"] > 0, name
    # the baselines reproduce ours: the reference featurisation (same noise, same matrix) and the
    # float64 per-λ inverse (the benchmarks' own equality checks)
    assert by_name["features"]["details"]["max_relative_difference"] <= 1e-4
    assert by_name["scores"]["details"]["max_abs_lds_difference"] <= 1e-6
