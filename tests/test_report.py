"""Report figures and tables, and the whole `snakemake --report` page in headless Chromium."""

from __future__ import annotations

import csv
import html.parser
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from diffattr import report, store
from diffattr.data import prepare_dataset
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.jobs import report as report_jobs
from diffattr.settings import AttributionGridSettings
from tests.workflow_utils import ROOT, snakemake

ARTIFACTS = ROOT / "tests" / "artifacts"


def _record(method: str, K: int, split: str, shift: float) -> dict:
    lambdas = [0.1, 1.0, 10.0, 100.0]
    curve = [0.05 + shift, 0.2 + shift, 0.15 + shift, 0.1 + shift]
    held = [0.1, 0.12, 0.3, 0.05]
    choice = {"lds": 0.15 + shift, "boot_mean": 0.14, "boot_std": 0.02, "ci_low": 0.1,
              "ci_high": 0.2}  # fmt: skip
    return {
        "lambdas": lambdas,
        "lds_curve": curve,
        "heldout_curve": held,
        "choices": {
            "heldout": {**choice, "lambda": 10.0, "lambda_index": 2},
            "oracle": {**choice, "lds": 0.2 + shift, "lambda": 1.0, "lambda_index": 1},
        },
    }


@pytest.fixture
def lds_files(tmp_path):
    labels, paths = [], []
    for m, method in enumerate(("trak", "dtrak")):
        for K in (2, 4):
            for split in ("val", "gen"):
                path = tmp_path / "lds" / method / f"K{K}" / f"{split}.json"
                store.write_json(path, _record(method, K, split, 0.05 * m))
                labels.append({"method": method, "K": K, "split": split})
                paths.append(str(path))
    return paths, labels


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_lds_figures(lds_files, tmp_path):
    paths, labels = lds_files
    report_jobs.plot_lds(paths, tmp_path / "lds.png", tmp_path / "curves.png", labels=labels)
    assert _png_size(tmp_path / "lds.png")[0] > 300
    assert _png_size(tmp_path / "curves.png")[0] > 300
    records = report.load_lds_records(paths, labels)
    assert {(r["method"], r["K"], r["split"]) for r in records} == {
        (label["method"], label["K"], label["split"]) for label in labels
    }
    with pytest.raises(ConfigError, match="2 LDS files but 1 labels"):
        report.load_lds_records(paths[:2], labels[:1])


def test_proponents_and_opponents_match_a_full_sort():
    row = np.array([0.3, -0.5, 0.9, 0.0, -0.1, 0.9, -0.7])
    top, bottom = report.proponents_and_opponents(row, 3, 2)
    assert top.tolist() == [2, 5, 0]  # ties keep column order
    assert bottom.tolist() == [6, 1]
    with pytest.raises(ConfigError, match="more than the 7 training rows"):
        report.proponents_and_opponents(row, 5, 3)
    assert report.evenly_spaced_rows(10, 4).tolist() == [0, 3, 6, 9]
    assert report.evenly_spaced_rows(2, 4).tolist() == [0, 1]


@pytest.fixture
def scored_dataset(tmp_path):
    """A digits dataset file, an LDS record and a score file whose columns follow its train split."""
    dataset = tmp_path / "dataset.h5"
    prepare_dataset(
        {"source": "digits", "resolution": 8, "train_size": 30, "val_size": 10}, dataset
    )
    from diffattr.data import load_split

    train, val = load_split(dataset, "train"), load_split(dataset, "val")
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, len(val), len(train))).astype(np.float32)
    scores[2, 0, 7] = 50.0  # query 0's strongest proponent at the chosen λ
    path = tmp_path / "scores.h5"
    store.write_h5(
        path,
        {"scores": scores, "lambdas": np.array([0.1, 1.0, 10.0, 100.0]),
         "train_ids": train.ids, "test_ids": val.ids},
        {"method": "dtrak", "lds_sign": -1},
    )  # fmt: skip
    lds = tmp_path / "lds.json"
    store.write_json(lds, _record("dtrak", 4, "val", 0.0))
    return dataset, path, lds, scores


def test_attribution_grid(scored_dataset, tmp_path):
    dataset, scores_path, lds, scores = scored_dataset
    out = tmp_path / "grid.png"
    settings = AttributionGridSettings(split="val", queries=3, proponents=5, opponents=3)
    chosen = report_jobs.plot_attribution_grid(str(scores_path), str(lds), str(dataset), None,
                                               str(out), settings=settings)  # fmt: skip
    assert chosen["rows"] == [0, 4, 9]
    assert chosen["proponents"][0][0] == 7, "held-out λ index 2 is used"
    assert chosen["proponents"][1] == np.argsort(-scores[2, 4], kind="stable")[:5].tolist()
    width, height = _png_size(out)
    assert width > 400 and height > 200


def test_attribution_grid_refuses_misaligned_scores(scored_dataset, tmp_path):
    dataset, scores_path, lds, scores = scored_dataset
    bad = tmp_path / "bad.h5"
    store.write_h5(
        bad,
        {"scores": scores, "lambdas": [0.1, 1.0, 10.0, 100.0],
         "train_ids": np.arange(scores.shape[2]) + 10**6,
         "test_ids": np.arange(scores.shape[1])},
        {"lds_sign": -1},
    )  # fmt: skip
    with pytest.raises(FeatureMismatchError, match="do not follow the train split"):
        report_jobs.plot_attribution_grid(
            str(bad), str(lds), str(dataset), None, str(tmp_path / "g.png"),
            settings=AttributionGridSettings(split="val", queries=2, proponents=2, opponents=1),
        )  # fmt: skip


def test_runtime_table(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for relative, seconds in (("train_main.tsv", 30.0), ("train_subset/lds/0/seed0.tsv", 10.0),
                              ("train_subset/lds/1/seed0.tsv", 14.0)):  # fmt: skip
        path = tmp_path / "bench" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:10\t512.5\t0\t0\t0\t0\t0\t0\t0\n")
    rows = report_jobs.tabulate_runtimes(str(tmp_path / "bench"), str(tmp_path / "runtimes.html"))
    assert rows[0] == {"rule": "train_main", "jobs": 1, "total_s": 30.0, "mean_s": 30.0,
                       "max_s": 30.0, "max_rss_mb": 512.5}  # fmt: skip
    assert rows[1]["rule"] == "train_subset" and rows[1]["jobs"] == 2 and rows[1]["mean_s"] == 12.0
    page = (tmp_path / "runtimes.html").read_text()
    assert "<td>train_subset</td>" in page and page.startswith("<!DOCTYPE html>")


def test_config_page_escapes_and_overview(tmp_path, lds_files):
    report_jobs.dump_config(
        str(tmp_path / "c.html"), config={"experiment": "x<y>", "data": {"source": "digits"}}
    )
    page = (tmp_path / "c.html").read_text()
    assert "x&lt;y&gt;" in page and "source: digits" in page
    summary = tmp_path / "summary.csv"
    with open(summary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["method", "split", "K", "lambda_choice", "lambda", "lds"])
        writer.writeheader()
        writer.writerow({"method": "dtrak", "split": "val", "K": 4, "lambda_choice": "heldout",
                         "lambda": 10, "lds": 15.0})  # fmt: skip
        writer.writerow({"method": "dtrak", "split": "val", "K": 4, "lambda_choice": "oracle",
                         "lambda": 1, "lds": 20.0})  # fmt: skip
    paths, labels = lds_files
    report_jobs.plot_lds(paths, tmp_path / "lds.png", tmp_path / "curves.png", labels=labels)
    report_jobs.write_overview(
        str(summary),
        {"lds-chart": str(tmp_path / "lds.png")},
        str(tmp_path / "o.html"),
        experiment="demo",
    )
    fragment = (tmp_path / "o.html").read_text()
    assert "id='lds-chart'" in fragment and "data:image/png;base64," in fragment
    assert "<td>heldout</td>" not in fragment and "<td>15.0</td>" in fragment


# ------------------------------------------------------------------ the report in a browser


def chromium() -> str:
    """Path of Debian's chromium, installed with apt-get when missing (skip if impossible)."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    install = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
    result = subprocess.run(["bash", "-c", install], capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"Chromium is missing and `{install}` failed:\n{result.stderr[-2000:]}")
    return shutil.which("chromium")


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--window-size=1400,2000", "--virtual-time-budget=10000", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


class RenderedImages(html.parser.HTMLParser):
    """ids of the <img> elements of a page; text inside <script> is not markup, so the
    report's embedded (not yet rendered) data does not count."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "img" and values.get("id"):
            self.ids[values["id"]] = values.get("src") or ""


@pytest.fixture(scope="module")
def built_report(tmp_path_factory, request):
    """(results folder, report page) of a finished run and its `snakemake --report`.

    By default a fresh run of the tiny configuration. DIFFATTR_REPORT_RUN=<workdir> (with
    DIFFATTR_REPORT_CONFIG=<configfile>, default the embedded config.yaml) reports an existing
    finished run instead, e.g. the embedded default after `make run`:
    `DIFFATTR_REPORT_RUN=. .venv/bin/python -m pytest tests/test_report.py -m slow -s`.
    """
    out = tmp_path_factory.mktemp("report")
    existing = os.environ.get("DIFFATTR_REPORT_RUN")
    if existing:
        workdir = Path(existing).resolve()
        config = Path(os.environ.get("DIFFATTR_REPORT_CONFIG", ROOT / "config.yaml")).resolve()
    else:  # the session's tiny run (conftest.tiny_run), shared with test_workflow.py
        workdir, config, _ = request.getfixturevalue("tiny_run")
    experiment = yaml.safe_load(config.read_text())["experiment"]
    page = out / "report.html"
    snakemake(workdir, config, "--report", str(page))
    return workdir / "results" / experiment, page


@pytest.mark.slow
def test_report_files_are_made_by_the_run(built_report):
    results, _ = built_report
    folder = results / "report"
    for name in ("lds.png", "lambda_curves.png", "runtimes.html", "config.html", "overview.html"):
        assert (folder / name).stat().st_size > 0
    assert list((folder / "proponents").rglob("*.png"))
    assert "<td>train_main</td>" in (folder / "runtimes.html").read_text()


@pytest.mark.slow
def test_report_shows_lds_chart_and_proponent_grid_in_chromium(built_report, tmp_path):
    binary = chromium()
    results, page = built_report
    text = page.read_text()
    for name in ("lds.png", "lambda_curves.png", "runtimes.html", "config.html"):
        assert name in text, f"{name} is not among the report's results"
    unrendered = RenderedImages()
    unrendered.feed(text)
    assert not unrendered.ids, "before rendering, the figures exist only as data in <script>"
    dom = headless(binary, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = RenderedImages()
    images.feed(dom.stdout)
    for element in ("lds-chart", "proponent-grid"):
        assert images.ids.get(element, "").startswith("data:image/png;base64,"), (
            f"{element} is not rendered on the report's front page; rendered images: "
            f"{sorted(images.ids)}"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"report-{results.name}.png"
    shot = headless(binary, tmp_path / "profile", f"--screenshot={screenshot}", page.as_uri())
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    print(f"\nreport screenshot: {screenshot}")
