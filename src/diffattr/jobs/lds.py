"""Jobs of ``rules/lds.smk``: the ground truth of a subset pool, the LDS of a score file and
the seed-to-seed noise ceiling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffattr import data, lds, store
from diffattr.errors import FeatureMismatchError
from diffattr.files import GroundTruth, read_groundtruth, read_measured, write_groundtruth
from diffattr.progress import status
from diffattr.settings import LdsSettings


@dataclass(frozen=True)
class HeldoutChoice:
    """Where a split's held-out λ comes from: the held-out pool's ground truth (``pool``) and,
    for the gen split under ``lds.gen_lambda: val``, the val split's grid file (``val_scores``,
    with the training features ``val_train`` a primal spectra file reads) whose held-out choice
    the gen split takes. A plain path is a pool whose split chooses its own λ."""

    pool: str
    val_scores: str | None = None
    val_train: tuple[str, ...] = ()

    @classmethod
    def of(cls, heldout: str | HeldoutChoice) -> HeldoutChoice:
        return heldout if isinstance(heldout, HeldoutChoice) else cls(str(heldout))

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> HeldoutChoice:
        """From a job's Snakemake inputs: ``heldout`` and the optional ``chooser_scores`` /
        ``chooser_train`` of the rules' ``method_chooser``."""
        return cls(
            inputs["heldout"], inputs.get("chooser_scores"), tuple(inputs.get("chooser_train", []))
        )

    def index(self, own_index: int, lambdas: Sequence[float] | None, grid: np.ndarray) -> int:
        """The reported λ index: ``own_index`` (the split's own held-out choice), or the held-out
        choice of the val grid (evaluated on ``lambdas``) on the val split of the pool, which
        must be on the same ``grid``. The same λ in :func:`evaluate_lds`,
        :func:`diffattr.jobs.scores.select_scores` and the counterfactual's choice."""
        if self.val_scores is None:
            return own_index
        from diffattr import spectral

        held = read_groundtruth(self.pool, "val")
        with spectral.open_scores(self.val_scores, lambdas, list(self.val_train)) as score:
            index, _ = heldout_lambda_index(score, held, self.val_scores)
            val_grid = np.asarray(score.lambdas, dtype=np.float64)
        if not np.array_equal(val_grid, np.asarray(grid, dtype=np.float64)):
            raise FeatureMismatchError(
                f"{self.val_scores}: its λ grid {val_grid.tolist()} differs from the gen grid "
                f"{np.asarray(grid).tolist()}; the val choice cannot choose the gen λ"
            )
        return index


def collect_groundtruth(
    dataset_path: str,
    subset_paths: Sequence[str],
    measured_paths: Sequence[Sequence[str]],
    out_path: str,
    *,
    pool: str,
    splits: Sequence[str],
) -> None:
    """Collect one pool's masks [S, N] and measured outputs [R seeds, S, n] per split."""
    train = data.load_split(dataset_path, "train")
    masks = data.subset_mask([data.read_subset(p) for p in subset_paths], len(train))
    per_split: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    output_fn = None
    for split in splits:
        by_seed, ids = [], None
        for per_seed in measured_paths:  # [seed][subset]
            if len(per_seed) != len(subset_paths):
                raise FeatureMismatchError(
                    f"{len(per_seed)} measured files for {len(subset_paths)} subsets of pool {pool!r}"
                )
            rows = []
            for path in per_seed:
                measured = read_measured(path, split)
                if ids is not None and not np.array_equal(ids, measured.ids):
                    raise FeatureMismatchError(f"{path}: query ids differ from the other models'")
                if output_fn is not None and measured.output_fn != output_fn:
                    raise FeatureMismatchError(
                        f"{path}: measures output_fn {measured.output_fn!r}, the other models "
                        f"of pool {pool!r} {output_fn!r}; one ground truth holds one output "
                        "(re-measure with one measure.output)"
                    )
                ids, output_fn = measured.ids, measured.output_fn
                rows.append(measured.outputs)
            by_seed.append(np.stack(rows))
        per_split[split] = (np.stack(by_seed), ids)
    write_groundtruth(
        out_path,
        masks,
        train.ids,
        per_split,
        {
            "pool": pool,
            "num_subsets": len(subset_paths),
            "num_seeds": len(measured_paths),
            "splits": list(splits),
        },
    )


def _check_alignment(score: Any, truth: GroundTruth, where: str) -> None:
    if not np.array_equal(score.train_ids, truth.train_ids):
        raise FeatureMismatchError(
            f"{where}: score columns do not follow the train split's row order"
        )
    if not np.array_equal(score.test_ids, truth.ids):
        raise FeatureMismatchError(f"{where}: score rows do not match the measured queries")


def evaluate_lds(
    scores_path: str,
    groundtruth_path: str,
    heldout: str | HeldoutChoice,
    out_path: str,
    *,
    settings: LdsSettings,
    train_paths: Sequence[str] | None = None,
) -> dict[str, Any]:
    """LDS over the λ grid on both pools; λ chosen on the held-out pool and, as an oracle, on the
    benchmark itself; and cross-fitted over the benchmark subsets (``crossfit``: λ chosen on
    one half, evaluated on the other, and swapped; :func:`diffattr.lds.crossfit_choice`).
    Writes a JSON record with the full curves.

    ``scores_path`` is a spectra file (methods with a ridge λ, evaluated on ``settings.lambdas``
    without a score matrix per λ: :mod:`diffattr.spectral`; a primal one reads ``train_paths``,
    the members' training features, again) or a score file. ``settings.sign`` defaults to its
    ``lds_sign`` attr (+1 for scores in loss units, such as empirical influence and datamodels;
    −1 otherwise).

    ``heldout``: the held-out pool, or a :class:`HeldoutChoice` whose val grid chooses this
    (gen) split's ``heldout`` λ (``lds.gen_lambda: val``); the split's own held-out choice is
    kept as ``heldout_own``."""
    from diffattr import spectral

    split, sign, lambdas = settings.split, settings.sign, settings.lambda_list()
    bootstrap_resamples, bootstrap_seed = settings.bootstrap_resamples, settings.bootstrap_seed
    choice = HeldoutChoice.of(heldout)
    bench = read_groundtruth(groundtruth_path, split)
    held = read_groundtruth(choice.pool, split)
    with spectral.open_scores(scores_path, lambdas, train_paths) as score:
        _check_alignment(score, bench, scores_path)
        _check_alignment(score, held, scores_path)
        factor = score.sign if sign is None else int(sign)
        flip = factor / score.sign  # an explicit sign overrides the file's
        bench_predictions = flip * score.predictions(bench.masks)
        held_predictions = flip * score.predictions(held.masks)
        grid, attrs = score.lambdas, score.attrs
    num_subsets = bench.masks.shape[0]
    folds = lds.crossfit_folds(num_subsets) if num_subsets >= 4 else []
    full = lds.lds_from_predictions(bench_predictions, bench.measured)
    fold_curves = [
        lds.lds_from_predictions(bench_predictions[:, rows], bench.measured[rows]) for rows in folds
    ]
    curve = _nanmean_rows(full, "lds")
    heldout_curve = _nanmean_rows(
        lds.lds_from_predictions(held_predictions, held.measured), "heldout"
    )
    record: dict[str, Any] = {
        "method": attrs.get("method"),
        "split": split,
        "K": attrs.get("K"),
        "kind": attrs.get("kind"),
        "readout": attrs.get("readout", "signed"),
        "lds_sign": factor,
        "params": attrs.get("params"),
        "lambdas": grid.tolist(),
        "lds_curve": curve.tolist(),
        "heldout_curve": heldout_curve.tolist(),
        "num_subsets": int(bench.masks.shape[0]),
        "num_heldout_subsets": int(held.masks.shape[0]),
        "num_queries": int(bench.measured.shape[1]),
        "choices": {},
    }
    oracle_index = int(np.nanargmax(curve))
    own_index, _ = lds.choose_lambda(heldout_curve, grid)
    heldout_index = choice.index(own_index, lambdas, grid)
    record["heldout_rule"] = "own" if choice.val_scores is None else "val"
    record["heldout_own"] = {
        "lambda": float(grid[own_index]),
        "lambda_index": int(own_index),
        "lds": float(curve[own_index]),
    }
    for name, index in (("heldout", heldout_index), ("oracle", oracle_index)):
        boot = lds.bootstrap_predictions(
            bench_predictions[index], bench.measured, bootstrap_resamples, bootstrap_seed
        )
        record["choices"][name] = {
            "lambda": float(grid[index]),
            "lambda_index": index,
            "lds": float(curve[index]),
            "boot_mean": float(boot["mean"]),
            "boot_std": float(boot["std"]),
            "ci_low": float(boot["ci_low"]),
            "ci_high": float(boot["ci_high"]),
            "at_grid_edge": lds.at_grid_edge(index, len(grid)),
            # [S, n] at this λ, for paired comparisons between methods (diffattr.summary)
            "predictions": bench_predictions[index].tolist(),
        }
    if fold_curves:
        crossfit = lds.crossfit_choice(fold_curves, grid)
        record["crossfit"] = {
            **crossfit,
            "folds": len(folds),
            "fold_subsets": [len(f) for f in folds],
            "fold_curves": [lds.curve_mean(c).tolist() for c in fold_curves],
        }
    for name, choice in [*record["choices"].items(), ("crossfit", record.get("crossfit"))]:
        if choice and choice["at_grid_edge"]:
            status("warning: the %s λ is at the edge of the grid; widen scoring.lambdas", name)
    store.write_json(out_path, record)
    held = record["choices"]["heldout"]
    status(
        "LDS %.2f%% at held-out λ %g (oracle %.2f%%)",
        100 * held["lds"],
        held["lambda"],
        100 * record["choices"]["oracle"]["lds"],
    )
    return record


def _nanmean_rows(per_query: np.ndarray, where: str) -> np.ndarray:
    """LDS per λ: ``nanmean`` over queries of [L, n], warning once per λ with NaN queries."""
    summaries = [lds.summarise(row) for row in per_query]
    for summary in summaries:
        lds._warn_nan(summary, where)
    return np.array([summary["lds"] for summary in summaries], dtype=np.float64)


def heldout_lambda_index(score: Any, heldout: GroundTruth, where: str) -> tuple[int, np.ndarray]:
    """(index, held-out curve): the λ with the best held-out LDS, as in :func:`evaluate_lds`."""
    _check_alignment(score, heldout, where)
    predictions = score.predictions(heldout.masks)
    curve = _nanmean_rows(lds.lds_from_predictions(predictions, heldout.measured), where)
    index, _ = lds.choose_lambda(curve, score.lambdas)
    return index, curve


def noise_ceiling(groundtruth_path: str, out_path: str, *, splits: Sequence[str]) -> None:
    """Seed-to-seed agreement of the measured outputs, per split (needs >= 2 training seeds)."""
    record: dict[str, Any] = {}
    for split in splits:
        by_seed = read_groundtruth(groundtruth_path, split, by_seed=True).measured_by_seed
        if by_seed.shape[0] < 2:
            record[split] = None
            continue
        ceiling = lds.noise_ceiling(by_seed)
        record[split] = {
            "mean": ceiling["mean"],
            "per_pair": np.asarray(ceiling["per_pair"]).tolist(),
            "attainable": ceiling["attainable"],
            "seeds": ceiling["seeds"],
            "decomposition": lds.ceiling_decomposition(by_seed),
        }
    store.write_json(out_path, record)
