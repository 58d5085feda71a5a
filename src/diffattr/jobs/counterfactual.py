"""Jobs of the counterfactual evaluation (protocol §6): one per rule in
``rules/counterfactual.smk``. Each reads its input files, calls the kernels of
:mod:`diffattr.counterfactual` and writes its outputs through :mod:`diffattr.store`.

* :func:`select_counterfactual_targets`  ``counterfactual/targets.h5``
* :func:`choose_counterfactual_lambda`   ``counterfactual/lambda/{method}.json`` (held-out λ, gen)
* :func:`remove_top_examples`            ``counterfactual/removals/{method}/{target}.h5``
* :func:`regenerate_counterfactual`      ``counterfactual/regenerated/{method}/{target}.h5``
* :func:`compare_counterfactual`         ``counterfactual/metrics/{method}/{target}.json``
* :func:`collect_counterfactual`         ``counterfactual/{metrics,paired}.csv``, ``summary.json``
* :func:`plot_counterfactual`            ``counterfactual/figure.png``

Retraining (rule ``train_counterfactual``) uses :func:`diffattr.jobs.train.train_model` with the
removal file as the training subset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr import data, store
from diffattr.counterfactual import (
    PAIRED_COLUMNS,
    RANDOM,
    compare_images,
    l2_distance,
    metric_statistics,
    paired_fractions,
    random_scores,
    regenerate_sample,
    removal_overlap,
    resolve_top_k,
    select_targets,
    top_k_removal,
)
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import (
    ScoreFile,
    read_groundtruth,
    read_regeneration,
    read_removal,
    read_sample_image,
    read_samples,
    read_targets,
    required_attr,
    write_regeneration,
    write_removal,
    write_targets,
)
from diffattr.images import to_unit_display
from diffattr.settings import (
    CounterfactualFigureSettings,
    CounterfactualLambdaSettings,
    CounterfactualMetricSettings,
    RemovalSettings,
    Runtime,
)
from diffattr.tables import csv_text

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from diffattr.jobs.lds import HeldoutChoice


@dataclass(frozen=True, kw_only=True)
class CaseFiles:
    """Per-(method, target) files of the evaluation, any order: ``metrics`` (JSON records),
    ``removals`` and ``regenerated`` (HDF5); a job reads the kinds it needs."""

    metrics: Sequence[str] = ()
    removals: Sequence[str] = ()
    regenerated: Sequence[str] = ()


@dataclass(frozen=True, kw_only=True)
class CollectedFiles:
    """What :func:`collect_counterfactual` writes: ``metrics`` (long CSV, one row per target,
    method and metric), ``paired`` (CSV of the paired fractions) and ``summary`` (JSON)."""

    metrics: str
    paired: str
    summary: str


def select_counterfactual_targets(
    samples_path: str,
    out_path: str,
    *,
    num_targets: int,
    target_seed: int,
    planned: Sequence[int] | None = None,
) -> list[int]:
    """``targets.h5``: the gen ids to explain (ids equal positions in ``samples/gen.h5``).

    ``planned`` are the targets the workflow derived from the config when it built its jobs;
    they must be the ones drawn here.
    """
    samples = read_samples(samples_path, images=False)
    ids = samples.ids
    digest = required_attr(samples.attrs, "model_digest", samples_path, "samples file")
    if not np.array_equal(ids, np.arange(len(ids))):
        raise FeatureMismatchError(f"{samples_path}: gen ids are not 0..n-1 in order")
    targets = select_targets(len(ids), num_targets, target_seed)
    if planned is not None and list(planned) != targets:
        raise FeatureMismatchError(
            f"{samples_path}: targets drawn from {len(ids)} samples {targets} differ from the "
            f"planned {list(planned)}; generation.num_samples and the samples file disagree"
        )
    write_targets(
        out_path,
        targets,
        {
            "kind": "counterfactual_targets",
            "target_seed": target_seed,
            "num_targets": num_targets,
            "num_samples": len(ids),
            "gen_model_digest": digest,
        },
    )
    return targets


def choose_counterfactual_lambda(
    scores_path: str,
    heldout: str | HeldoutChoice,
    out_path: str,
    train_paths: Sequence[str] | None = None,
    *,
    settings: CounterfactualLambdaSettings,
) -> dict[str, Any]:
    """The λ with the best held-out LDS on the gen split: the same choice as
    :func:`diffattr.jobs.lds.evaluate_lds`.

    It is recomputed here from the held-out pool alone (rather than read from the LDS record),
    so adding benchmark subsets does not retrain the counterfactual models. ``scores_path`` is
    the method's spectra file (evaluated on ``settings.lambdas``) or, for a method without λ,
    its score file; ``train_paths`` are the training features a primal spectra file reads again.
    ``heldout`` is the held-out pool or a :class:`diffattr.jobs.lds.HeldoutChoice`; with a val
    grid in it (``lds.gen_lambda: val``) the λ is the val split's held-out choice.
    """
    from diffattr import spectral
    from diffattr.jobs.lds import HeldoutChoice, heldout_lambda_index

    choice = HeldoutChoice.of(heldout)
    truth = read_groundtruth(choice.pool, "gen")
    lambdas = settings.lambda_list()
    with spectral.open_scores(scores_path, lambdas, train_paths) as score:
        index, curve = heldout_lambda_index(score, truth, scores_path)
        grid, sign = score.lambdas, score.sign
    index = choice.index(index, lambdas, grid)
    record = {
        "method": settings.method,
        "K": settings.K,
        "split": "gen",
        "lambda": float(grid[index]),
        "lambda_index": index,
        "lds_sign": sign,
        "lambdas": np.asarray(grid, dtype=np.float64).tolist(),
        "heldout_curve": curve.tolist(),
    }
    store.write_json(out_path, record)
    return record


def remove_top_examples(
    dataset_path: str,
    out_path: str,
    *,
    settings: RemovalSettings,
    scores_path: str | None = None,
    lambda_path: str | None = None,
) -> np.ndarray:
    """Remove the target's top-k training rows; the file's ``positions`` are the kept rows.

    A scored method ranks by its gen scores (``scores_path``) at its held-out λ
    (``lambda_path``); ``random`` needs neither.

    ``positions`` (sorted kept rows) makes the file a training subset for ``train_model``;
    ``removed`` holds the removed rows in rank order and ``scores`` the ranking scores (oriented
    so that larger means more support for the target).
    """
    method, target = settings.method, settings.target
    train_ids = data.load_split(dataset_path, "train", images=False).ids
    attrs: dict[str, Any] = {"kind": "counterfactual_removal", "method": method, "target": target}
    if method == RANDOM:
        scores = random_scores(len(train_ids), settings.random_seed, target)
        attrs["random_seed"] = settings.random_seed
    else:
        if scores_path is None or lambda_path is None:
            raise ConfigError(f"method {method!r} needs its score file and its λ choice")
        choice = store.read_json(lambda_path)
        with ScoreFile(scores_path) as score:
            if not np.array_equal(score.train_ids, train_ids):
                raise FeatureMismatchError(
                    f"{scores_path}: score columns do not follow the train split's row order"
                )
            rows = np.flatnonzero(score.test_ids == target)
            if rows.size != 1:
                raise FeatureMismatchError(f"{scores_path}: gen sample {target} is not a score row")
            # lds_sign −1: a positive score supports the query; +1 (loss units): negative
            sign = score.lds_sign
            row = score.read_rows(score.lambda_index(choice["lambda"]), rows)[0]
        scores = -sign * row.astype(np.float64)
        attrs.update(
            {
                "lambda": choice["lambda"],
                "lambda_index": choice["lambda_index"],
                "K": choice["K"],
                "lds_sign": sign,
            }
        )
    k = resolve_top_k(len(train_ids), settings.top_k, settings.top_fraction)
    removed, kept = top_k_removal(scores, k)
    attrs.update(top_k=k, n_train=len(train_ids), size=int(kept.size))
    write_removal(out_path, kept, removed, scores, attrs)
    logger.info("%s, target %d: removed %d of %d rows", method, target, k, len(train_ids))
    return removed


def regenerate_counterfactual(
    model_dir: str,
    samples_path: str,
    out_path: str,
    *,
    method: str,
    target: int,
    runtime: Runtime,
) -> np.ndarray:
    """Regenerate one target with a retrained model: same seed, sampler, steps, batch, prompt
    and guidance, all from the samples file (``runtime.batch_size`` is not used)."""
    from diffattr.models import load_diffusion_model, resolve_device

    samples = read_samples(samples_path, images=False)
    gen = samples.generation()
    seeds, prompts = samples.seeds, samples.prompts
    # On CPU the batch layout fixes the last bits, so regenerate in the original generation's
    # batches (the batch size recorded in the samples file).
    batch_size = gen.batch_size
    index = samples.position(target)
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    image = regenerate_sample(model, seeds, index, gen, prompts)
    write_regeneration(
        out_path,
        image,
        {
            "kind": "counterfactual_regeneration",
            "method": method,
            "target": target,
            "seed": int(seeds[index]),
            "prompt": None if prompts is None else prompts[index],
            "steps": samples.attrs["steps"],
            "eta": samples.attrs["eta"],
            "batch_size": batch_size,
            "model_digest": store.digest_directory(model_dir),
            "gen_model_digest": gen.model_digest,
        },
    )
    return image


def compare_counterfactual(
    samples_path: str,
    regenerated_path: str,
    out_path: str,
    *,
    settings: CounterfactualMetricSettings,
    runtime: Runtime,
    latent_model_dir: str | None = None,
) -> dict[str, Any]:
    """Metrics of one (target, method): the original generated image vs its regeneration.

    With ``latent_model_dir`` (a latent model such as SD + LoRA) ℓ2 compares the two images'
    raw VAE latent modes, as the paper does for ArtBench; SSIM and CLIP always use pixels.
    ``runtime.device`` runs CLIP and the VAE; the CLIP encoder keeps its own batch size (the two
    images are one batch), not ``runtime.batch_size``.
    """
    clip_weights, device = settings.clip_weights, runtime.device
    regeneration = read_regeneration(regenerated_path)
    regenerated = regeneration.image
    original = read_sample_image(samples_path, regeneration.target)
    wanted = list(settings.metrics)
    encode, clip_note = None, None
    if "clip" in wanted and clip_weights is None:
        wanted.remove("clip")
        clip_note = "off (clip.weights is null)"
        logger.info("CLIP similarity %s (set it to a transformers CLIP checkpoint)", clip_note)
    elif "clip" in wanted:
        from diffattr.clip import ClipEncoder
        from diffattr.models import resolve_device

        encode = ClipEncoder(clip_weights, str(resolve_device(device)))
        clip_note = f"{encode.description} from {clip_weights}"
    values = compare_images(original, regenerated, wanted, encode)
    space = "pixel"
    if latent_model_dir is not None and "l2" in wanted:
        latents = latent_modes(latent_model_dir, np.stack([original, regenerated]), device)
        values["l2"] = l2_distance(latents[0], latents[1])
        space = "latent"
    record = {
        "method": regeneration.method,
        "target": regeneration.target,
        "space": space,
        "metrics": values,
        "clip": clip_note,
    }
    store.write_json(out_path, record)
    return record


def latent_modes(model_dir: str, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Raw (unscaled) VAE latent modes of images [n, C, H, W] under a latent model's VAE."""
    from diffattr.models import load_diffusion_model, resolve_device

    model = load_diffusion_model(model_dir, resolve_device(device))
    return model.encode(images, scaled=False).numpy()


def collect_counterfactual(
    targets_path: str,
    cases: CaseFiles,
    lambda_paths: Sequence[str],
    lds_paths: Sequence[str],
    *,
    out: CollectedFiles,
    methods: Sequence[str],
) -> dict[str, Any]:
    """Aggregate per-target metrics (``cases.metrics``, ``cases.removals``): a long table,
    per-method statistics, paired fractions, removal-set overlaps; checks that each λ used
    (``lambda_paths``) is the one the LDS record at the same position reports (``lds_paths``)."""
    targets = read_targets(targets_path)
    records = [store.read_json(path) for path in cases.metrics]
    found = sorted((r["method"], int(r["target"])) for r in records)
    expected = sorted((m, t) for m in methods for t in targets)
    if found != expected:
        raise FeatureMismatchError(
            f"metric files cover {found}, expected every (method, target) of {expected}"
        )
    by_key = {(r["method"], int(r["target"])): r for r in records}
    metric_names = list(records[0]["metrics"])
    values = {
        m: {name: [by_key[m, t]["metrics"][name] for t in targets] for name in metric_names}
        for m in methods
    }
    long_rows = [
        {"target": t, "method": m, "metric": name, "value": by_key[m, t]["metrics"][name]}
        for t in targets
        for m in methods
        for name in metric_names
    ]
    removed: dict[str, dict[int, np.ndarray]] = {m: {} for m in methods}
    top_k = n_train = None
    for path in cases.removals:
        removal = read_removal(path)
        removed[removal.method][removal.target] = removal.removed
        top_k, n_train = removal.attrs["top_k"], removal.attrs["n_train"]
    lambdas, method_K = {}, {}
    for choice_path, lds_path in zip(lambda_paths, lds_paths, strict=True):
        choice, reported = store.read_json(choice_path), store.read_json(lds_path)
        if choice["lambda_index"] != reported["choices"]["heldout"]["lambda_index"]:
            raise FeatureMismatchError(
                f"{choice_path}: λ index {choice['lambda_index']} differs from the held-out "
                f"choice {reported['choices']['heldout']['lambda_index']} in {lds_path}"
            )
        lambdas[choice["method"]] = choice["lambda"]
        method_K[choice["method"]] = choice["K"]
    summary = {
        "methods": list(methods),
        "targets": targets,
        "top_k": top_k,
        "n_train": n_train,
        "method_K": method_K,
        "lambdas": lambdas,
        "space": records[0]["space"],
        "clip": records[0].get("clip"),
        "statistics": metric_statistics(values),
        "paired": paired_fractions(values, methods),
        "overlap": removal_overlap(removed, methods),
    }
    store.write_text(out.metrics, csv_text(long_rows, ["target", "method", "metric", "value"]))
    store.write_text(out.paired, csv_text(summary["paired"], PAIRED_COLUMNS))
    store.write_json(out.summary, summary)
    return summary


def plot_counterfactual(
    samples_path: str,
    dataset_path: str,
    cases: CaseFiles,
    out_path: str,
    *,
    settings: CounterfactualFigureSettings,
) -> None:
    """One row per (target, method): original, regeneration (with its ℓ2), top removed rows."""
    methods, figure_removed = settings.methods, settings.figure_removed
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_images = data.load_split(dataset_path, "train").images
    gen_images = read_samples(samples_path).images
    regenerated, removed, l2 = {}, {}, {}
    for path in cases.regenerated:
        regeneration = read_regeneration(path)
        regenerated[regeneration.method, regeneration.target] = regeneration.image
    for path in cases.removals:
        removal = read_removal(path)
        removed[removal.method, removal.target] = removal.removed
    for path in cases.metrics:
        record = store.read_json(path)
        l2[record["method"], int(record["target"])] = record["metrics"].get("l2")
    targets = list(dict.fromkeys(t for _, t in regenerated))
    rows = [(t, m) for t in targets for m in methods]
    columns = 2 + figure_removed
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.1 * columns, 1.2 * len(rows)), squeeze=False
    )
    for row, (target, method) in enumerate(rows):
        panels = [gen_images[target], regenerated[method, target]]
        panels += [train_images[p] for p in removed[method, target][:figure_removed]]
        distance = l2[method, target]
        titles = [f"gen {target}", method + ("" if distance is None else f"\nℓ2 {distance:.2f}")]
        titles += [f"removed #{i + 1}" for i in range(figure_removed)]
        for column, axis in enumerate(axes[row]):
            axis.axis("off")
            if column < len(panels):
                axis.imshow(to_unit_display(panels[column]), cmap="gray", vmin=0, vmax=1)
                axis.set_title(titles[column], fontsize=6)
    figure.tight_layout()
    with store.atomic_path(out_path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
