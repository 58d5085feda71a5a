"""Ensembled TRAK / D-TRAK over retrain-pool models (protocol §5, ``06_ensemble``).

Model m (m = 0 … M−1) of the retrain pool was trained on its own α-subset with the pool's first
training seed. Its features of *all* N training rows and of the queries are taken at its own final
weights, its TRAK scores are computed over the λ grid, and the ensemble score at λ is the mean of
the M models' scores at that λ.

λ choice (differs from the reference): the reference averaged each model's scores at that
model's own oracle λ. Here λ is shared by the members and chosen for the *average* on the held-out
pool by ``evaluate_lds``, like every other method; the oracle λ is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from diffattr.errors import FeatureMismatchError
from diffattr.files import read_feature_pair
from diffattr.methods.base import (
    Method,
    Need,
    Param,
    ScoreJob,
    features_need,
    method_noise,
    positive_int,
    register,
)
from diffattr.methods.gradient import CHECK_KEYS
from diffattr.methods.trak import (
    OUTPUT_FN_PARAM,
    TIMESTEP_NORM_PARAM,
    check_timestep_norm,
    feature_fn,
)

#: Settings every ensemble member must share (the model digest differs by design).
SHARED_KEYS = (
    "proj_kind",
    "proj_seed",
    "proj_dim",
    "output_fn",
    "timesteps",
    "noise_seed",
    "noise",
)


def retrain_checkpoint(m: int) -> str:
    """The feature ``ckpt`` name of retrain-pool model m."""
    return f"retrain-{int(m)}"


@register
class EnsembleTrak(Method):
    kind = "ensemble_trak"
    summary = "TRAK scores averaged over M retrain-pool models (each at its own weights)"
    params = {
        "output_fn": OUTPUT_FN_PARAM,
        "timestep_norm": TIMESTEP_NORM_PARAM,
        "num_models": Param("M: retrain-pool models 0..M-1 in the ensemble.", check=positive_int),
    }
    uses_lambdas = True
    needs_retrain_pool = True

    def writes_spectra(self, params: Mapping[str, Any]) -> bool:
        return True

    def retrain_models(self, params: Mapping[str, Any]) -> int:
        return int(params["num_models"])

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn, members, noise = feature_fn(params), range(params["num_models"]), method_noise(params)
        return {
            "train": [features_need(retrain_checkpoint(m), fn, K, "train", noise) for m in members],
            "test": [features_need(retrain_checkpoint(m), fn, K, split, noise) for m in members],
        }

    def score(self, job: ScoreJob) -> None:
        """A spectra file with one factorisation per member (the mean is taken when read)."""
        from diffattr import spectral

        check_timestep_norm(
            job.input("train") + job.input("test"), job.params.get("timestep_norm", False)
        )
        members, first = [], None
        for train_path, test_path in zip(job.input("train"), job.input("test"), strict=True):
            train, test = read_feature_pair(train_path, test_path, CHECK_KEYS)
            if first is None:
                first = (train, test)
            else:
                _check_member(first[0], train)
                if not np.array_equal(first[1].ids, test.ids):
                    raise FeatureMismatchError(f"{test_path}: query rows differ between members")
            members.append(
                spectral.member_from_features(
                    train.features, test.features, train_attrs=train.attrs
                )
            )
        spectral.write_spectra_members(
            job.out_path,
            members,
            first[0].ids,
            first[1].ids,
            {
                **self.score_attrs(job),
                "score_kind": self.kind,
                "member_features": job.input("train"),
            },
        )


def _check_member(reference: Any, member: Any) -> None:
    from diffattr.store import require_same

    require_same(
        reference.attrs,
        member.attrs,
        SHARED_KEYS,
        f"ensemble members {reference.path} and {member.path}",
    )
    if not np.array_equal(reference.ids, member.ids):
        raise FeatureMismatchError(f"{member.path}: training rows differ between ensemble members")
