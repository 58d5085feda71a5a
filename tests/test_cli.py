"""The `diffattr` command line: ad-hoc attribution with a tiny local model, and config docs."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffattr.attribute import content_ids, default_lambda, list_images, read_attribution
from diffattr.cli import main
from diffattr.config_docs import DOCS_PATH, render_markdown
from diffattr.errors import DataError
from diffattr.files import read_scores
from tests.conftest import SCHEDULER, TINY_UNET

N_TRAIN = 120
SOURCE = 37  # the training image the query copies


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A random-weight 8x8 UNet saved as a pipeline, 120 digit PNGs, and 3 queries (one a copy)."""
    from sklearn.datasets import load_digits

    from diffattr.models import build_scheduler, build_unet, save_model

    root = tmp_path_factory.mktemp("attribute")
    torch.manual_seed(0)
    save_model(build_unet(TINY_UNET), build_scheduler(SCHEDULER), root / "model")
    pixels = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    (root / "train").mkdir()
    (root / "query").mkdir()
    for i in range(N_TRAIN):
        Image.fromarray(pixels[i]).save(root / "train" / f"{i:03d}.png")
    shutil.copy(root / "train" / f"{SOURCE:03d}.png", root / "query" / "a_copy.png")
    for i in (500, 900):
        Image.fromarray(pixels[i]).save(root / "query" / f"b_other_{i}.png")
    return root


@pytest.fixture(scope="module")
def attributed(folders):
    out = folders / "out"
    code = main(
        ["attribute", "--model", str(folders / "model"), "--train", str(folders / "train"),
         "--query", str(folders / "query"), "--out", str(out), "--top-k", "5", "--K", "4",
         "--proj-dim", "256", "--batch-size", "64", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return out


def test_exact_copy_ranks_its_source_in_the_top_percent(attributed, capsys):
    result = read_attribution(attributed / "scores.h5")
    assert result.scores.shape == (3, N_TRAIN)
    query = result.query_paths.index(
        next(p for p in result.query_paths if p.endswith("a_copy.png"))
    )
    rank = result.rank_of(query, SOURCE)
    with capsys.disabled():
        print(
            f"\n[diffattr attribute] exact copy of train image {SOURCE}: rank {rank} of {N_TRAIN}"
        )
    assert rank <= math.ceil(0.01 * N_TRAIN)
    assert result.attrs["method"] == "dtrak" and result.attrs["output_fn"] == "square"


def test_outputs_are_complete(attributed, folders):
    scores = read_scores(attributed / "scores.h5")  # the workflow's score layout
    assert scores.scores.shape == (1, 3, N_TRAIN) and scores.lambdas[0] > 0
    with open(attributed / "top_k.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 5 and list(rows[0]) == ["query", "rank", "train", "score"]
    copy_rows = [r for r in rows if r["query"].endswith("a_copy.png")]
    assert [int(r["rank"]) for r in copy_rows] == [1, 2, 3, 4, 5]
    assert copy_rows[0]["train"] == str(folders / "train" / f"{SOURCE:03d}.png")
    scores_listed = [float(r["score"]) for r in copy_rows]
    assert scores_listed == sorted(scores_listed, reverse=True)
    page = (attributed / "gallery.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 * 6 and "src='http" not in page
    with Image.open(attributed / "gallery.png") as image:
        assert image.width > 200 and image.height > 100


def test_csv_training_list_and_content_ids(folders, tmp_path):
    table = tmp_path / "train.csv"
    names = [f"{i:03d}.png" for i in (5, 1, 9)]
    table.write_text("path,label\n" + "".join(f"{folders / 'train' / n},x\n" for n in names))
    assert [p.name for p in list_images(table)] == names
    relative = folders / "relative.csv"
    relative.write_text("path\ntrain/001.png\n")
    assert list_images(relative) == [folders / "train" / "001.png"]
    relative.write_text("path\ntrain/missing.png\n")
    with pytest.raises(DataError, match="1 listed image"):
        list_images(relative)
    images = np.zeros((3, 1, 2, 2), np.float32)
    images[2] = 1
    ids = content_ids(images)
    assert ids[0] == ids[1] != ids[2] and (ids >= 0).all()


def test_default_lambda_is_mean_nonzero_eigenvalue():
    phi = np.random.default_rng(0).normal(size=(5, 12))
    eigenvalues = np.linalg.eigvalsh(phi.T @ phi)
    nonzero = eigenvalues[eigenvalues > 1e-9]
    assert len(nonzero) == 5
    assert default_lambda(phi) == pytest.approx(nonzero.mean())


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "diffattr"  # pyproject [project.scripts]
    result = subprocess.run(
        [str(script), "attribute", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "--top-k" in result.stdout


def test_configuration_docs_match_the_schema():
    assert DOCS_PATH.read_text(encoding="utf-8") == render_markdown(), (
        "docs/configuration.md is out of date with src/diffattr/schemas/config.schema.yaml; "
        "run `diffattr config-docs` (or `.venv/bin/python -m diffattr.cli config-docs`)"
    )


def test_config_docs_command(tmp_path, capsys):
    target = tmp_path / "configuration.md"
    assert main(["config-docs", "--output", str(target), "--check"]) == 1
    assert main(["config-docs", "--output", str(target)]) == 0
    assert main(["config-docs", "--output", str(target), "--check"]) == 0
    text = target.read_text()
    for key in ("data.source", "features.proj_dim", "report.proponents", "subsets.lds.num_subsets"):
        assert f"`{key}`" in text


def test_output_options_are_checked_before_anything_runs():
    from diffattr.attribute import OutputOptions
    from diffattr.errors import ConfigError

    with pytest.raises(ConfigError, match="--gallery 'pdf'"):
        OutputOptions(gallery="pdf")
    with pytest.raises(ConfigError, match="--top-k 0"):
        OutputOptions(top_k=0)
