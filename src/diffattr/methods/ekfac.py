"""EK-FAC influence of the diffusion loss through kronfluence (:mod:`diffattr.ekfac`).

τ(q, i) = ∇L_q ᵀ (F̂ + δI)⁻¹ ∇L_i with F̂ kronfluence's EK-FAC (or K-FAC, diagonal, identity)
approximation of the MC-Fisher, fitted once per model and noise scheme (``ekfac/main/{noise}/T{T}-{strategy}``), and L
the loss at the K scored timesteps with the feature stage's noise. The damping δ plays the role
of λ: the score file's λ axis holds ``dampings`` and the LDS job chooses one on the held-out
subsets (and reports the oracle). τ > 0: upweighting row i lowers the query's loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffattr.methods.base import (
    Method,
    Need,
    Param,
    ScoreJob,
    method_noise,
    one_of,
    positive_numbers,
    register,
)
from diffattr.methods.readout import READOUT_PARAM, apply_readout

#: Default damping grid (absolute, added to the EK-FAC eigenvalues).
DEFAULT_DAMPINGS = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def _check_T(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or 1000 % value:
        return f"must be a positive integer dividing 1000 (uniform timesteps), got {value!r}"
    return None


@register
class EKFAC(Method):
    kind = "ekfac"
    summary = "EK-FAC influence of the diffusion loss (kronfluence), damping chosen like λ"
    params = {
        "strategy": Param(
            "kronfluence preconditioner: ekfac (default), kfac, diagonal or identity (= grad dot).",
            default="ekfac",
            check=one_of("ekfac", "kfac", "diagonal", "identity"),
        ),
        "factor_timesteps": Param(
            "T uniform timesteps per training image in the factor fit (each (x, t) one example).",
            default=100,
            check=_check_T,
        ),
        "dampings": Param(
            "Damping grid δ (absolute); chosen on the held-out subsets like λ.",
            default=list(DEFAULT_DAMPINGS),
            check=positive_numbers,
        ),
        "readout": READOUT_PARAM,
    }
    uses_model = True

    def unavailable_reason(self, config: Mapping[str, Any]) -> str | None:
        try:
            import kronfluence  # noqa: F401
        except ImportError:
            return "kronfluence is not installed (pip install '.[ekfac]', docs/methods.md)"
        return None

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        needs = {
            "model": [Need("main_model")],
            "dataset": [Need("dataset")],
            "factors": [
                Need(
                    "ekfac_factors",
                    {
                        "noise": method_noise(params),
                        "T": int(params["factor_timesteps"]),
                        "strategy": params["strategy"],
                    },
                )
            ],
        }
        if split == "gen":
            needs["samples"] = [Need("samples")]
        return needs

    def score(self, job: ScoreJob) -> None:
        from diffattr import ekfac

        settings = job.settings
        scheme = job.params.get("noise", "common")
        geometry = settings.get("reference_noise", {}) if scheme == "reference" else {}
        scores, train_ids, test_ids, info = ekfac.influence_scores_of_split(
            job.one_input("model"),
            job.one_input("dataset"),
            job.one_input("samples") if "samples" in job.inputs else None,
            job.one_input("factors"),
            job.split,
            job.K,
            settings.get("t_strategy", "uniform"),
            job.params["dampings"],
            int(job.params.get("noise_seed", settings.get("noise_seed", 0))),
            int(settings.get("batch_size", 32)),
            settings.get("device", "cpu"),
            noise=scheme,
            noise_batch_size=int(geometry.get("batch_size", 0)),
            noise_shard_rows=int(geometry.get("shard_rows", 0)),
        )
        readout = job.params.get("readout", "signed")
        self.write_score_grid(
            job,
            apply_readout(scores, readout),
            job.params["dampings"],
            train_ids,
            test_ids,
            {**info, "readout": readout, "lambda_is": "damping"},
        )
