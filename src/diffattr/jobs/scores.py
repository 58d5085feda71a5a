"""Jobs of ``rules/scores.smk``: one score (or spectra) file per (method, K, split) for every
method kind (:func:`score_method`, which serves both ``score_method`` and ``factor_method``),
the score file at the held-out λ (``select_scores``) and at every λ (``score_grid``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffattr.files import read_groundtruth
from diffattr.jobs.lds import heldout_lambda_index
from diffattr.methods import ScoreJob, get_method
from diffattr.progress import status


def score_method(
    kind: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any],
    out_path: str,
    method: str,
    K: int,
    split: str,
    lambdas: list[float],
    chunk_rows: int,
    progress: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Score one (method, K, split): ``inputs`` maps each input name to a path or paths;
    ``progress`` (the job's log stream) receives the TRAK family's progress bar."""
    files = {
        name: [paths] if isinstance(paths, str) else list(paths) for name, paths in inputs.items()
    }
    job = ScoreJob(
        method,
        kind,
        dict(params),
        int(K),
        split,
        files,
        out_path,
        list(lambdas),
        chunk_rows,
        progress,
        dict(settings or {}),
    )
    get_method(kind).score(job)


def select_scores(
    spectra_path: str,
    heldout_path: str,
    out_path: str,
    split: str,
    lambdas: Sequence[float],
    chunk_rows: int = 4096,
    train_paths: Sequence[str] | None = None,
) -> float:
    """The score file of a method with a ridge λ at the λ that is used: the held-out choice of
    this split (the λ of the proponent figures and, on gen, of the counterfactual removals, the
    choice of :func:`diffattr.jobs.lds.evaluate_lds`). Returns that λ."""
    from diffattr import spectral

    held = read_groundtruth(heldout_path, split)
    with spectral.open_scores(spectra_path, lambdas, train_paths) as score:
        index, curve = heldout_lambda_index(score, held, spectra_path)
        value = float(score.lambdas[index])
        extra = {
            "lambda_choice": "heldout",
            "heldout_lambda": value,
            "heldout_lambda_index": index,
            "heldout_curve": curve.tolist(),
        }
        spectral.write_selected_scores(score, out_path, [index], extra, chunk_rows)
    status("scores at the held-out λ %g", value)
    return value


def score_grid(
    spectra_path: str,
    out_path: str,
    lambdas: Sequence[float],
    chunk_rows: int = 4096,
    train_paths: Sequence[str] | None = None,
) -> None:
    """Score matrices at every λ of the grid (``scoring.write_all_lambdas``)."""
    from diffattr import spectral

    with spectral.open_scores(spectra_path, lambdas, train_paths) as score:
        spectral.write_selected_scores(score, out_path, range(len(score.lambdas)), None, chunk_rows)
    status("scores at %d λ", len(lambdas))
