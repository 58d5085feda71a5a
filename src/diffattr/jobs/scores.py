"""Jobs of ``rules/scores.smk``: one score (or spectra) file per (method, K, split) for every
method kind (:func:`score_method`, which serves both ``score_method`` and ``factor_method``),
the score file at the held-out λ (``select_scores``) and at every λ (``score_grid``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffattr.files import read_groundtruth
from diffattr.jobs.lds import HeldoutChoice, heldout_lambda_index
from diffattr.methods import ScoreJob, get_method
from diffattr.progress import status
from diffattr.settings import Runtime, ScoreGridSettings, ScoreSettings


def score_method(
    inputs: Mapping[str, Any],
    out_path: str,
    *,
    settings: ScoreSettings,
    runtime: Runtime,
) -> None:
    """Score one (method, K, split): ``inputs`` maps each input name to a path or paths; the
    method kind gets ``settings.model_settings`` with the runtime's batch size, and the
    runtime's progress stream (the job's log) receives the TRAK family's progress bar."""
    s = settings
    method = get_method(s.kind)
    files = {
        name: [paths] if isinstance(paths, str) else list(paths) for name, paths in inputs.items()
    }
    job = ScoreJob(
        s.method,
        s.kind,
        dict(s.params),
        int(s.K),
        s.split,
        files,
        out_path,
        list(s.lambdas),
        s.chunk_rows,
        runtime.progress,
        {**s.model_settings, "batch_size": runtime.batch_size},
    )
    method.score(job)


def select_scores(
    spectra_path: str,
    heldout: str | HeldoutChoice,
    out_path: str,
    *,
    split: str,
    grid: ScoreGridSettings,
    train_paths: Sequence[str] | None = None,
) -> float:
    """The score file of a method with a ridge λ at the λ that is used: the held-out choice of
    this split (the λ of the proponent figures and, on gen, of the counterfactual removals, the
    choice of :func:`diffattr.jobs.lds.evaluate_lds`, so on gen, with a
    :class:`~diffattr.jobs.lds.HeldoutChoice` that has a val grid, the val split's held-out
    choice) among ``grid.lambdas``. Returns that λ."""
    from diffattr import spectral

    choice = HeldoutChoice.of(heldout)
    held = read_groundtruth(choice.pool, split)
    with spectral.open_scores(spectra_path, list(grid.lambdas), train_paths) as score:
        index, curve = heldout_lambda_index(score, held, spectra_path)
        index = choice.index(index, list(grid.lambdas), score.lambdas)
        value = float(score.lambdas[index])
        extra = {
            "lambda_choice": "heldout",
            "heldout_lambda": value,
            "heldout_lambda_index": index,
            "heldout_curve": curve.tolist(),
        }
        spectral.write_selected_scores(score, out_path, [index], extra, grid.chunk_rows)
    status("scores at the held-out λ %g", value)
    return value


def score_grid(
    spectra_path: str,
    out_path: str,
    *,
    grid: ScoreGridSettings,
    train_paths: Sequence[str] | None = None,
) -> None:
    """Score matrices at every λ of ``grid`` (``scoring.write_all_lambdas``)."""
    from diffattr import spectral

    with spectral.open_scores(spectra_path, list(grid.lambdas), train_paths) as score:
        spectral.write_selected_scores(
            score, out_path, range(len(score.lambdas)), None, grid.chunk_rows
        )
    status("scores at %d λ", len(grid.lambdas))
