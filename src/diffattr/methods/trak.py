"""The TRAK kernel and its two normalisations (protocol §5, ``04_if``, ``02_relative_if``, ``03_norm_if``).

* ``trak``: τ_λ = Ψ(ΦᵀΦ + λI)⁻¹Φᵀ with Φ, Ψ the main model's features of one output function
  (``loss`` is TRAK, ``square`` is D-TRAK; any output function of protocol §4 works);
* ``relative_if``: column i divided by ‖(Φ G_λ⁻¹)_i‖₂ (Relative IF);
* ``renormalized_if``: column i divided by ‖Φ_i‖₂ (Renormalized IF).

All three score the whole λ grid from one factorisation (:func:`diffattr.scoring.write_trak_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

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

#: Output functions of protocol §4 (``diffattr.outputs`` registers the same names).
OUTPUT_FNS = ("loss", "square", "mean", "l1", "l2", "linf", "elbo_loss")

OUTPUT_FN_PARAM = Param(
    "Output function f whose gradient is the feature (protocol §4).",
    default="loss",
    check=one_of(*OUTPUT_FNS),
)


class TrakKernel(Method):
    """Ψ(ΦᵀΦ+λI)⁻¹Φᵀ on the main model's features, optionally column-normalised."""

    params = {"output_fn": OUTPUT_FN_PARAM}
    uses_lambdas = True
    normalize: ClassVar[str] = "none"
    #: Provenance attributes train and query features must share (None: the scoring default).
    check_keys: ClassVar[tuple[str, ...] | None] = None

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn, noise = params["output_fn"], method_noise(params)
        return {
            "train": [features_need("main", fn, K, "train", noise)],
            "test": [features_need("main", fn, K, split, noise)],
        }

    def score(self, job: ScoreJob) -> None:
        from diffattr import scoring

        scoring.write_trak_scores(
            job.one_input("train"),
            job.one_input("test"),
            job.out_path,
            job.lambdas,
            self.score_attrs(job),
            job.chunk_rows,
            check_keys=self.check_keys,
            score_kind=self.kind,
            progress=job.progress,
            normalize=self.normalize,
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
