"""Jobs of ``rules/checks.smk``: the sample-quality record (:mod:`diffattr.sample_quality`),
the class agreement of the proponents (:mod:`diffattr.attribution_sanity`) and what the run
found, in plain words (:mod:`diffattr.demo_checks`)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffattr import store
from diffattr.attribution_sanity import class_agreement, plot_sanity
from diffattr.demo_checks import findings
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import read_samples
from diffattr.sample_quality import plot_quality, quality_record
from diffattr.settings import AgreementSettings, FindingsSettings


@dataclass(frozen=True, kw_only=True)
class RecordAndFigure:
    """A JSON ``record`` and the PNG ``figure`` drawn from it (:func:`check_attributions`)."""

    record: str
    figure: str


@dataclass(frozen=True, kw_only=True)
class FindingsPages:
    """The findings as markdown (``md``, checks.md) and as an HTML fragment (``html``, the
    report's first screen)."""

    md: str
    html: str


def assess_samples(
    dataset_path: str, samples_path: str, out_json: str, out_png: str
) -> dict[str, Any]:
    """Score ``samples_path`` against the splits of ``dataset_path``; JSON record + figure."""
    from diffattr import data

    train = data.load_split(dataset_path, "train")
    val = data.load_split(dataset_path, "val")
    samples = read_samples(samples_path)
    gen = np.asarray(samples.images, dtype=np.float32)
    gen_ids = samples.ids.astype(np.int64)
    if gen.shape[1:] != train.images.shape[1:]:
        raise FeatureMismatchError(
            f"{samples_path}: samples have shape {gen.shape[1:]}, the train images "
            f"{train.images.shape[1:]}"
        )
    record = quality_record(train.images, train.labels, val.images, val.labels, gen)
    record["gen"]["ids"] = gen_ids.tolist()
    record["samples_digest"] = store.digest_files([samples_path])
    store.write_json(out_json, record)
    plot_quality(record, out_png)
    from diffattr.progress import status

    status(
        "%.0f%% of samples recognised (real val %.0f%%)",
        100 * record["gen"]["recognised_fraction"],
        100 * record["val"]["recognised_fraction"],
    )
    return record


def check_attributions(
    score_paths: Sequence[str],
    lds_paths: Sequence[str],
    dataset_path: str,
    quality_path: str | None,
    *,
    out: RecordAndFigure,
    settings: AgreementSettings,
) -> list[dict[str, Any]]:
    """Class agreement of every (method, K, split) in ``settings.labels`` (parallel to the
    paths); the gen split needs the sample-quality record (``quality_path``) for its classes."""
    labels, top = settings.labels, settings.top
    from diffattr import data
    from diffattr.files import ScoreFile

    if not len(score_paths) == len(lds_paths) == len(labels):
        raise ConfigError("score files, LDS records and labels must be parallel lists")
    train = data.load_split(dataset_path, "train")
    query_labels: dict[str, np.ndarray] = {"val": data.load_split(dataset_path, "val").labels}
    query_ids: dict[str, np.ndarray] = {"val": data.load_split(dataset_path, "val").ids}
    if quality_path is not None:
        quality = store.read_json(quality_path)
        query_labels["gen"] = np.asarray(quality["gen"]["labels"], dtype=np.int64)
        query_ids["gen"] = np.asarray(quality["gen"]["ids"], dtype=np.int64)
    rows = []
    for scores_path, lds_path, label in zip(score_paths, lds_paths, labels, strict=True):
        split = label["split"]
        if split not in query_labels:
            continue  # a split without classes (gen without the quality record)
        choice = store.read_json(lds_path)["choices"]["heldout"]
        n = len(query_labels[split])
        with ScoreFile(scores_path) as file:
            scores = file.read_rows(file.lambda_index(choice["lambda"]), np.arange(n))
            train_ids, test_ids, sign = file.train_ids, file.test_ids, file.lds_sign
        if not np.array_equal(train_ids, train.ids):
            raise FeatureMismatchError(f"{scores_path}: columns do not follow the train split")
        if not np.array_equal(test_ids, query_ids[split]):
            raise FeatureMismatchError(f"{scores_path}: rows do not match the {split!r} queries")
        # support: τ, or −τ for scores in loss units (lds_sign +1), as in the proponent grids
        result = class_agreement(-sign * scores, query_labels[split], train.labels, top)
        rows.append({**dict(label), "lambda": choice["lambda"], **result})
    store.write_json(out.record, rows)
    plot_sanity(rows, out.figure)
    return rows


def summarize_checks(
    summary_csv: str,
    quality_path: str | None,
    sanity_path: str | None,
    counterfactual_path: str | None,
    *,
    out: FindingsPages,
    settings: FindingsSettings,
) -> list[tuple[str, str]]:
    """What the run found (:func:`diffattr.demo_checks.findings`) from the results tables and
    the checks that ran (None: not run)."""
    quality = store.read_json(quality_path) if quality_path else None
    sanity = store.read_json(sanity_path) if sanity_path else []
    counterfactual = store.read_json(counterfactual_path) if counterfactual_path else None
    lines = findings(
        summary_csv, quality, sanity, counterfactual, settings.method_kinds, settings.run
    )
    markdown = "## What this run found\n\n" + "".join(f"- **{h}.** {t}\n" for h, t in lines)
    store.write_text(out.md, markdown)
    items = "".join(f"<li><b>{html.escape(h)}.</b> {html.escape(t)}</li>" for h, t in lines)
    store.write_text(
        out.html,
        f"<div class='diffattr-findings'><h3>What this run found</h3><ul>{items}</ul></div>\n",
    )
    return lines
