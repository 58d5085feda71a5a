"""DAS, the Diffusion Attribution Score (Lin, Tao, Dong, Xu; ICLR 2025), as its code runs it.

(github.com/Jinxu-Lin/DAS ``CIFAR2/03_grad.py``, ``07_score.py``; docs/methods.md, "DAS".)

* features: f = mean(ε̂) (``output_fn``: ``mean`` | ``l1`` | ``square``), each timestep's
  per-sample gradient scaled to unit norm before the mean over K (``timestep_norm``), projected
  like every gradient feature: ``features/main/<fn>_tnorm/K{K}/{split}.h5``;
* the TRAK kernel: τ = Ψ(ΦᵀΦ + λI)⁻¹Φᵀ over the λ grid;
* the residual weight (``residual_weight``): column i times w_i = mean_s(r_{i,s} / ‖r_i‖₂), r_{i,s}
  the RMSE of ε̂ at S = ``residual_timesteps`` uniform timesteps (:mod:`diffattr.residuals`,
  its own forward-only job ``residuals/main/{noise}/S{S}.h5``, with the features' noise);
* ``readout``: ``signed`` τ·w (DAS1) or ``squared`` (τ·w)² (DAS1squ, what its code reports).

The reference also divides (K + λI)⁻¹ by mean|(K + λI)⁻¹| per λ: one positive constant per λ,
which no rank-based LDS sees, so it is left out. Each flag can be switched off alone (the
ablations of docs/methods.md); with all of them off ``das`` is the TRAK kernel on mean(ε̂).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from diffattr.methods.readout import READOUT_PARAM
from diffattr.methods.trak import (
    TIMESTEP_NORM_PARAM,
    _check_bool,
    check_timestep_norm,
    feature_fn,
    write_kernel_scores,
)

#: DAS's output functions: mean(ε̂) (its default), mean|ε̂| and mean(ε̂²) (D-TRAK's).
DAS_OUTPUT_FNS = ("mean", "l1", "square")


#: What the residual file and the training features must share.
RESIDUAL_CHECK_KEYS = (
    "model_digest",
    "noise_seed",
    "noise",
    "noise_batch_size",
    "noise_shard_rows",
)


def _check_S(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or 1000 % value:
        return f"must be a positive integer dividing 1000 (uniform timesteps), got {value!r}"
    return None


def residuals_need(S: int, noise: str) -> Need:
    return Need("residuals", {"noise": noise, "S": int(S)})


@register
class DAS(Method):
    kind = "das"
    summary = "DAS: TRAK kernel on unit-norm per-timestep grads of mean(ε̂), times w_i"
    params = {
        "output_fn": Param(
            "DAS output f: mean(ε̂) (DAS), l1 = mean|ε̂|, square = mean(ε̂²) (D-TRAK's).",
            default="mean",
            check=one_of(*DAS_OUTPUT_FNS),
        ),
        "timestep_norm": Param(
            TIMESTEP_NORM_PARAM.description, default=True, check=TIMESTEP_NORM_PARAM.check
        ),
        "residual_weight": Param(
            "Multiply column i by w_i = mean_s(r_i,s / ‖r_i‖₂) (DAS1); false: plain τ.",
            default=True,
            check=_check_bool,
        ),
        "residual_timesteps": Param(
            "S, uniform timesteps of the residual pass (DAS's code: 1000).",
            default=1000,
            check=_check_S,
        ),
        "readout": READOUT_PARAM,
    }
    uses_lambdas = True

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn, noise = feature_fn(params), method_noise(params)
        needs = {
            "train": [features_need("main", fn, K, "train", noise)],
            "test": [features_need("main", fn, K, split, noise)],
        }
        if params["residual_weight"]:
            needs["residuals"] = [residuals_need(params["residual_timesteps"], noise)]
        return needs

    def score(self, job: ScoreJob) -> None:
        from diffattr.files import FeatureFile, read_residual_weights

        check_timestep_norm(
            job.input("train") + job.input("test"), job.params.get("timestep_norm", False)
        )
        weights, extra = None, {}
        if job.params["residual_weight"]:
            path = job.one_input("residuals")
            with FeatureFile(job.one_input("train"), "train") as train:
                attrs = {k: train.attrs[k] for k in RESIDUAL_CHECK_KEYS if k in train.attrs}
                train_ids = train.ids()
            weights = read_residual_weights(path, train_ids, attrs)
            extra = {"residuals": path, "residual_timesteps": job.params["residual_timesteps"]}
        write_kernel_scores(job, self, column_weights=weights, extra_attrs=extra)
