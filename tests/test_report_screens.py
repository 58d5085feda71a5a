"""What a person sees: the report's first screen and one proponent grid, in headless Chromium.

Without a run this builds the front-page fragment (plain-words findings, sample sheet, LDS
table) and a proponent grid from small synthetic inputs; with DIFFATTR_REPORT_RUN=<workdir> of a
finished `make run` it screenshots that run's files instead:

    DIFFATTR_REPORT_RUN=. .venv/bin/python -m pytest tests/test_report_screens.py -s

Screenshots land in tests/artifacts/ (git-ignored). Skips when Chromium is not installed
(`apt-get install chromium`); it never installs it itself.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from diffattr import report, store
from diffattr.images import save_png
from diffattr.jobs.checks import FindingsPages, summarize_checks
from diffattr.jobs.report import write_overview
from diffattr.sample_quality import sample_sheet
from diffattr.settings import FindingsSettings
from tests.workflow_utils import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
FIRST_SCREEN = (1280, 800)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium is not installed (apt-get install chromium); no screenshots taken")


def _screenshot(binary: str, url: str, out: Path, size: tuple[int, int], profile: Path) -> None:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000",
        f"--screenshot={out}", url,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and out.exists(), result.stderr[-2000:]


def _synthetic_front_page(folder: Path) -> tuple[Path, Path]:
    """(overview page, proponent grid) built from small synthetic inputs."""
    rng = np.random.default_rng(0)
    digits = np.where(rng.random((20, 1, 8, 8)) < 0.3, 1.0, -1.0).astype(np.float32)
    sheet = folder / "gen.png"
    save_png(str(sheet), sample_sheet(digits, digits[::-1], columns=5), scale=1)
    summary = folder / "summary.csv"
    with open(summary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["method", "split", "K", "lambda_choice", "lambda", "lds"])
        writer.writeheader()
        for method, lds in (("dtrak", 21.5), ("trak", 9.0), ("raw_cos", 30.1)):
            writer.writerow({"method": method, "split": "val", "K": 10,
                             "lambda_choice": "heldout", "lambda": 10, "lds": lds})  # fmt: skip
    sanity = folder / "sanity.json"
    store.write_json(sanity, [{"method": "dtrak", "K": 10, "split": "val", "top": 5,
                               "agreement": 0.62, "chance": 0.1, "ratio": 6.2}])  # fmt: skip
    findings = folder / "findings.html"
    summarize_checks(
        str(summary), None, str(sanity), None,
        out=FindingsPages(md=str(folder / "checks.md"), html=str(findings)),
        settings=FindingsSettings(method_kinds={"dtrak": "trak", "trak": "trak",
                                                "raw_cos": "raw_cos"},
                                  run={"dataset": "digits", "n_train": 600}),
    )  # fmt: skip
    grid = folder / "grid.png"
    scores = rng.normal(size=(3, 20)).astype(np.float32)
    chosen = [report.proponents_and_opponents(row, 5, 3) for row in scores]
    rows = [
        report.GridRow(digits[r], f"val id {r}", top, bottom, scores[r])
        for r, (top, bottom) in enumerate(chosen)
    ]
    report.plot_attribution_grid(rows, digits, grid, title="dtrak, K = 10, val queries")
    overview = folder / "overview.html"
    write_overview(
        str(summary),
        {"samples": str(sheet)},
        str(overview),
        experiment="demo",
        findings_path=str(findings),
    )
    return overview, grid


def _run_front_page(workdir: Path, folder: Path) -> tuple[Path, Path]:
    config = Path(os.environ.get("DIFFATTR_REPORT_CONFIG", ROOT / "config.yaml"))
    experiment = yaml.safe_load(config.read_text())["experiment"]
    results = workdir / "results" / experiment / "report"
    grids = sorted((results / "proponents").rglob("gen.png")) or sorted(
        (results / "proponents").rglob("*.png")
    )
    return results / "overview.html", grids[0]


def _page(overview: Path, folder: Path) -> Path:
    """The overview fragment as a page, as the report's front page shows it."""
    page = folder / "front.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>diffattr</title></head>"
        "<body style='font-family:sans-serif;margin:16px'>"
        + overview.read_text()
        + "</body></html>"
    )
    return page


def _ink(path: Path) -> float:
    """Fraction of pixels that are not (near) white."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return float((pixels < 200).mean())


def test_first_screen_and_a_proponent_grid(tmp_path):
    binary = _chromium()
    existing = os.environ.get("DIFFATTR_REPORT_RUN")
    if existing:
        overview, grid = _run_front_page(Path(existing).resolve(), tmp_path)
    else:
        overview, grid = _synthetic_front_page(tmp_path)
    text = overview.read_text()
    assert "What this run found" in text, "the plain-words findings lead the front page"
    assert text.index("What this run found") < text.index("<table"), "findings come first"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tag = "run" if existing else "synthetic"
    first = ARTIFACTS / f"first-screen-{tag}.png"
    _screenshot(binary, _page(overview, tmp_path).as_uri(), first, FIRST_SCREEN, tmp_path / "p")
    with Image.open(first) as image:
        assert image.size == FIRST_SCREEN
    assert _ink(first) > 0.01, "the first screen is blank"
    with Image.open(grid) as image:
        size = (max(image.width + 40, 400), image.height + 40)
    shot = ARTIFACTS / f"proponent-grid-{tag}.png"
    _screenshot(binary, grid.as_uri(), shot, size, tmp_path / "p")
    assert _ink(shot) > 0.01, "the proponent grid renders blank"
    print(f"\nscreenshots: {first} {shot}")
