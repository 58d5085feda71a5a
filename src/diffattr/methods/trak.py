"""The TRAK kernel and its two normalisations (protocol §5, ``04_if``, ``02_relative_if``, ``03_norm_if``).

* ``trak``: τ_λ = Ψ(ΦᵀΦ + λI)⁻¹Φᵀ with Φ, Ψ the main model's features of one output function
  (``loss`` is TRAK, ``square`` is D-TRAK; any output function of protocol §4 works);
* ``relative_if``: column i divided by ‖(Φ G_λ⁻¹)_i‖₂ (Relative IF);
* ``renormalized_if``: column i divided by ‖Φ_i‖₂ (Renormalized IF).

With the signed readout all three store one factorisation (:func:`diffattr.spectral.write_spectra`),
from which the LDS jobs evaluate the whole λ grid and the score files are written at the λ
values that are used; the squared readout (not linear in τ) scores the whole grid
(:func:`diffattr.scoring.write_trak_scores`).
Each takes ``timestep_norm`` (features from unit-norm per-timestep gradients, stored as
``features/main/<fn>_tnorm/...``) and ``readout`` (``signed`` or ``squared``,
:mod:`diffattr.methods.readout`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from diffattr.methods.base import (
    Method,
    Need,
    Param,
    ScoreJob,
    features_need,
    method_noise,
    one_of,
    register,
)
from diffattr.methods.readout import READOUT_PARAM, raw_path_for, transform_score_file

#: Output functions of protocol §4 (``diffattr.outputs`` registers the same names).
OUTPUT_FNS = ("loss", "square", "mean", "l1", "l2", "linf", "elbo_loss")

OUTPUT_FN_PARAM = Param(
    "Output function f whose gradient is the feature (protocol §4).",
    default="loss",
    check=one_of(*OUTPUT_FNS),
)


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


TIMESTEP_NORM_PARAM = Param(
    "Scale each timestep's per-sample gradient to unit norm before the mean over K (DAS).",
    default=False,
    check=_check_bool,
)


def feature_fn(params: Mapping[str, Any]) -> str:
    """The feature name (``fn`` of the feature path) of a gradient method's params."""
    from diffattr.features import feature_name

    return feature_name(params["output_fn"], bool(params.get("timestep_norm", False)))


def check_timestep_norm(paths: Sequence[str], expected: bool) -> None:
    """Refuse feature files whose ``timestep_norm`` is not the method's (missing = False)."""
    from diffattr.errors import FeatureMismatchError
    from diffattr.files import FeatureFile

    for path in paths:
        with FeatureFile(path) as features:
            value = bool(features.attrs.get("timestep_norm", False))
        if value != bool(expected):
            raise FeatureMismatchError(
                f"{path}: features have timestep_norm={value}, the method needs {bool(expected)}"
            )


def write_kernel_scores(
    job: ScoreJob,
    method: Method,
    normalize: str = "none",
    check_keys: Sequence[str] | None = None,
    column_weights: np.ndarray | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> None:
    """TRAK-kernel scores of ``job`` with its readout and optional per-training-row weights."""
    from diffattr import scoring

    readout = job.params.get("readout", "signed")
    direct = readout == "signed" and column_weights is None and not extra_attrs
    target = job.out_path if direct else raw_path_for(job.out_path)
    try:
        scoring.write_trak_scores(
            job.one_input("train"),
            job.one_input("test"),
            target,
            job.lambdas,
            method.score_attrs(job),
            scoring.TrakOptions(
                normalize=normalize,
                score_kind=method.kind,
                check_keys=check_keys,
                chunk_rows=job.chunk_rows,
                progress=job.progress,
            ),
        )
        if not direct:
            transform_score_file(target, job.out_path, readout, column_weights, extra_attrs)
    finally:
        if not direct:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()


class TrakKernel(Method):
    """Ψ(ΦᵀΦ+λI)⁻¹Φᵀ on the main model's features, optionally column-normalised."""

    params = {
        "output_fn": OUTPUT_FN_PARAM,
        "timestep_norm": TIMESTEP_NORM_PARAM,
        "readout": READOUT_PARAM,
    }
    uses_lambdas = True
    normalize: ClassVar[str] = "none"
    #: Provenance attributes train and query features must share (None: the scoring default).
    check_keys: ClassVar[tuple[str, ...] | None] = None

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn, noise = feature_fn(params), method_noise(params)
        return {
            "train": [features_need("main", fn, K, "train", noise)],
            "test": [features_need("main", fn, K, split, noise)],
        }

    def writes_spectra(self, params: Mapping[str, Any]) -> bool:
        """The signed readout is linear in τ: one factorisation serves the grid; τ² is not."""
        return params.get("readout", "signed") == "signed"

    def score(self, job: ScoreJob) -> None:
        if "timestep_norm" in self.params:
            check_timestep_norm(
                job.input("train") + job.input("test"), job.params.get("timestep_norm", False)
            )
        if not self.writes_spectra(job.params):
            write_kernel_scores(job, self, self.normalize, self.check_keys)
            return
        from diffattr import spectral
        from diffattr.scoring import TrakOptions

        options = TrakOptions(
            form="auto",
            normalize=self.normalize,
            score_kind=self.kind,
            check_keys=self.check_keys,
            chunk_rows=job.chunk_rows,
            progress=job.progress,
        )
        spectral.write_spectra(
            job.one_input("train"),
            job.one_input("test"),
            job.out_path,
            self.score_attrs(job),
            options,
        )


@register
class Trak(TrakKernel):
    kind = "trak"
    summary = "TRAK kernel on one output function (loss: TRAK, square: D-TRAK)"


@register
class RelativeIF(TrakKernel):
    kind = "relative_if"
    summary = "TRAK scores with column i divided by ‖(Φ G⁻¹)_i‖ (Barshan et al. 2020)"
    normalize = "relative"


@register
class RenormalizedIF(TrakKernel):
    kind = "renormalized_if"
    summary = "TRAK scores with column i divided by ‖Φ_i‖ (Hammoudeh & Lowd 2022)"
    normalize = "renormalized"
