"""EK-FAC influence of the diffusion loss through kronfluence (:mod:`diffattr.ekfac`).

τ(q, i) = ∇L_q ᵀ (F̂ + δI)⁻¹ ∇L_i with F̂ kronfluence's EK-FAC (or K-FAC, diagonal, identity)
approximation of the MC-Fisher, fitted once per model and noise scheme (``ekfac/main/{noise}/T{T}-{strategy}``), and L
the loss at the K scored timesteps with the feature stage's noise. The damping δ plays the role
of λ: the score file's λ axis holds ``dampings`` and the LDS job chooses one on the held-out
subsets (and reports the oracle). τ > 0: upweighting row i lowers the query's loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from diffattr.settings import (
    FeatureNoiseSettings,
    Runtime,
    SplitRows,
    _bad,
    _check_choice,
    _check_int,
    _is_number,
)

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
        settings = job.settings
        scheme = job.params.get("noise", "common")
        geometry = settings.get("reference_noise", {}) if scheme == "reference" else {}
        noise = FeatureNoiseSettings(
            noise_seed=int(job.params.get("noise_seed", settings.get("noise_seed", 0))),
            noise=scheme,
            noise_batch_size=int(geometry.get("batch_size", 0)),
            noise_shard_rows=int(geometry.get("shard_rows", 0)),
        )
        samples = job.one_input("samples") if "samples" in job.inputs else None
        scores, train_ids, test_ids, info = influence_scores_of_split(
            job.one_input("model"),
            job.one_input("dataset"),
            job.one_input("factors"),
            rows=SplitRows(split=job.split, samples_path=samples),
            settings=InfluenceSettings(
                K=job.K,
                t_strategy=settings.get("t_strategy", "uniform"),
                dampings=job.params["dampings"],
                noise=noise,
            ),
            runtime=Runtime(
                batch_size=int(settings.get("batch_size", 32)),
                device=settings.get("device", "cpu"),
            ),
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


@dataclass(frozen=True, kw_only=True)
class InfluenceSettings:
    """What the EK-FAC scores of a query split are (:func:`influence_scores_of_split`): ``K``
    scored timesteps by ``t_strategy`` (the feature stage's), the damping grid (None: kronfluence's
    heuristic) and the training features' noise."""

    K: int
    t_strategy: str
    dampings: Sequence[float | None]
    noise: FeatureNoiseSettings

    def __post_init__(self) -> None:
        from diffattr.features import TIMESTEP_STRATEGIES

        _check_int(self, "K", 1)
        _check_choice(self, "t_strategy", TIMESTEP_STRATEGIES)
        dampings = self.dampings
        if (
            isinstance(dampings, (str, bytes))
            or not isinstance(dampings, Sequence)
            or not dampings
            or not all(d is None or (_is_number(d) and 0 <= d < float("inf")) for d in dampings)
        ):
            raise _bad(self, "dampings", dampings, "expected a non-empty list of numbers >= 0")
        object.__setattr__(self, "dampings", tuple(dampings))
        if not isinstance(self.noise, FeatureNoiseSettings):
            raise _bad(self, "noise", self.noise, "expected a FeatureNoiseSettings")


def influence_scores_of_split(
    model_dir: str,
    dataset_path: str,
    factors_dir: str,
    *,
    rows: SplitRows,
    settings: InfluenceSettings,
    runtime: Runtime,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """([L, n, N] scores, train ids, query ids, provenance) of one (K, query split): every row
    of ``rows.split`` (one shard: the whole split) against the whole training set."""
    from diffattr import features, store
    from diffattr.ekfac import (
        DiffusionLoss,
        SampleDataset,
        _encode,
        _train_inputs,
        influence_scores,
        peak_rss_mb,
        read_provenance,
    )
    from diffattr.errors import FeatureMismatchError
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.queries import load_queries, load_query_captions

    if rows.num_shards != 1:
        raise _bad(rows, "num_shards", rows.num_shards, "EK-FAC scores a whole split (1)")
    noise = settings.noise
    provenance = read_provenance(factors_dir)
    digest = store.digest_directory(model_dir)
    if (
        provenance.get("model_digest") != digest
        or provenance.get("noise_seed") != noise.noise_seed
        or provenance.get("noise", noise.noise) != noise.noise
    ):
        raise FeatureMismatchError(
            f"{factors_dir}: factors of model {provenance.get('model_digest')} with noise seed "
            f"{provenance.get('noise_seed')} ({provenance.get('noise')}), but the scores use "
            f"{digest} and {noise.noise_seed} ({noise.noise}); "
            "refit the factors"
        )
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    scheduler = model.scheduler
    steps = features.select_timesteps(
        int(settings.K), settings.t_strategy, scheduler.config.num_train_timesteps
    )
    x0, train_ids, cond = _train_inputs(model, dataset_path, runtime.batch_size)
    split, samples_path = rows.split, rows.samples_path
    images, query_ids = load_queries(split, dataset_path, samples_path)
    captions = load_query_captions(split, dataset_path, samples_path) if model.conditional else None
    qx0, query_ids, qcond = _encode(model, images, query_ids, captions, runtime.batch_size)
    scores = influence_scores(
        model.denoiser,
        DiffusionLoss(scheduler, noise.noise_seed, runtime.batch_size, timesteps=steps),
        factors_dir,
        SampleDataset(x0, train_ids, cond, noise_keys=noise.noise_keys(train_ids)),
        SampleDataset(qx0, query_ids, qcond, noise_keys=noise.noise_keys(query_ids, split)),
        list(settings.dampings),
    )
    info = {
        "timesteps": steps,
        "noise_seed": int(noise.noise_seed),
        **noise.noise_attrs(),
        "model_digest": digest,
        "factors": str(factors_dir),
        "factor_strategy": provenance["strategy"],
        "uncovered_parameters": provenance["uncovered_parameters"],
        "peak_rss_mb": peak_rss_mb(),
    }
    return scores, train_ids, query_ids, info
