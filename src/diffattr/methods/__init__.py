"""Attribution methods of the study (protocol §5), selectable by ``kind`` in the config.

Each method family is one module that registers its kinds (see :mod:`diffattr.methods.base`):

=================== ===================================================== ========== =====
kind                scores                                                K / λ      sign
=================== ===================================================== ========== =====
trak                Ψ(ΦᵀΦ+λI)⁻¹Φᵀ, any output function (D-TRAK: square)    K, grid    −1
relative_if         TRAK, column i / ‖(ΦG⁻¹)_i‖                           K, grid    −1
renormalized_if     TRAK, column i / ‖Φ_i‖                                K, grid    −1
grad_dot, grad_cos  ΨΦᵀ or cosine at the final checkpoint                 K          −1
tracin, gas         dot or cosine averaged over the 25/50/75/100% ckpts   K          −1
raw_dot, raw_cos    flattened images in [-1, 1] (latents: VAE mode)       –          −1
clip_dot, clip_cos  CLIP image embeddings (transformers, diffattr.clip)   –          −1
journey_trak        TRAK, gen features along the DDIM trajectory (gen)    K, grid    −1
ensemble_trak       TRAK averaged over M retrain-pool models              K, grid    −1
das                 TRAK on unit-norm grads of mean(ε̂), column i × w_i     K, grid    −1
ekfac               kronfluence EK-FAC influence of the diffusion loss        K, damping −1
empirical_influence mean y with row i − mean y without, retrain pool      –          +1
datamodels          per-query ridge (CV α) of retrain outputs on masks    –          +1
=================== ===================================================== ========== =====

Adding a kind is one module with a registered :class:`~diffattr.methods.base.Method` subclass,
imported below, plus its ``kind`` in ``src/diffattr/schemas/config.schema.yaml``. Methods that use no
timesteps live under ``K0`` in the results layout (``scores/{method}/K0/{split}.h5``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from diffattr.errors import ConfigError
from diffattr.methods import (  # noqa: F401
    das,
    ekfac,
    ensemble,
    gradient,
    journey,
    retrain,
    similarity,
    trak,
)
from diffattr.methods.base import (
    DEFAULT_NOISE,
    Method,
    Need,
    ScoreJob,
    get_method,
    method_kinds,
    register,
)

#: The K of methods that use no timesteps, in paths and in the summary.
NO_K = 0

#: Keys every method accepts besides its kind's params.
COMMON_KEYS = ("kind",)


def validate_methods(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``methods`` block with every kind's defaults filled; ConfigError names the bad key.

    Checks that each key is a parameter of its kind, that required params are given and valid,
    that retrain-based methods have a large enough ``subsets.retrain`` pool drawn with its own
    seed, and that gen-only methods have ``gen`` among ``lds.splits``.
    """
    methods = {}
    for name, entry in config.get("methods", {}).items():
        where = f"config: methods.{name}"
        if not isinstance(entry, Mapping) or "kind" not in entry:
            raise ConfigError(f"{where} must be a mapping with a 'kind'; got {entry!r}")
        method = get_method(entry["kind"])
        noise_keys = ["K", "noise", "noise_seed"] if method.uses_K else []
        valid = [*COMMON_KEYS, *noise_keys, *method.params]
        for key in entry:
            if key not in valid:
                raise ConfigError(
                    f"{where}: key {key!r} is not a parameter of kind {entry['kind']!r}; "
                    f"valid keys: {', '.join(valid)}"
                )
        resolved = {"kind": entry["kind"]}
        if "K" in entry:
            resolved["K"] = copy.deepcopy(entry["K"])
        if method.uses_K:
            resolved["noise"] = _noise_scheme(where, entry, config)
            if "noise_seed" in entry:
                seed = entry["noise_seed"]
                if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                    raise ConfigError(
                        f"{where}.noise_seed must be a non-negative integer, got {seed!r}"
                    )
                resolved["noise_seed"] = seed
        for key, param in method.params.items():
            if key not in entry and param.required:
                raise ConfigError(
                    f"{where}: kind {entry['kind']!r} needs {key!r} ({param.description})"
                )
            value = copy.deepcopy(entry.get(key, param.default))
            problem = param.check(value) if param.check else None
            if problem:
                raise ConfigError(f"{where}.{key} {problem} ({param.description})")
            resolved[key] = value
        _check_pools(where, method, resolved, config)
        if method.query_splits != ("val", "gen"):
            splits = config.get("lds", {}).get("splits", ["val", "gen"])
            if not set(method.query_splits) & set(splits):
                raise ConfigError(
                    f"{where}: kind {entry['kind']!r} scores only {list(method.query_splits)} "
                    f"queries but lds.splits is {splits}; add them or remove the method"
                )
        methods[name] = resolved
    return methods


def _noise_scheme(where: str, entry: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """A gradient method's feature-noise scheme: its own ``noise``, else ``features.noise``."""
    from diffattr.noise import NOISE_SCHEMES

    default = config.get("features", {}).get("noise", DEFAULT_NOISE)
    scheme = entry.get("noise", default)
    if scheme not in NOISE_SCHEMES:
        source = f"{where}.noise" if "noise" in entry else "config: features.noise"
        raise ConfigError(
            f"{source} = {scheme!r} is not a feature-noise scheme; valid: "
            f"{', '.join(NOISE_SCHEMES)} (docs/noise.md)"
        )
    return scheme


def _check_pools(where: str, method: Method, params: dict[str, Any], config: Mapping) -> None:
    if not method.needs_retrain_pool:
        return
    subsets = config.get("subsets", {})
    pool = subsets.get("retrain")
    if not pool:
        raise ConfigError(
            f"{where}: kind {params['kind']!r} needs a retrain pool; add subsets.retrain "
            "(num_subsets, seed, train_seeds) to the config"
        )
    needed = method.retrain_models(params)
    if needed > pool["num_subsets"]:
        raise ConfigError(
            f"{where}.num_models = {needed} exceeds subsets.retrain.num_subsets = "
            f"{pool['num_subsets']}"
        )
    clashes = [p for p in ("lds", "heldout") if p in subsets and subsets[p]["seed"] == pool["seed"]]
    if clashes:
        raise ConfigError(
            f"subsets.retrain.seed = {pool['seed']} equals the seed of pool(s) {clashes}; the "
            "retrain pool must be drawn with its own seed so that methods fitted on it are never "
            "evaluated on their own subsets"
        )


def runnable_methods(config: Mapping[str, Any]) -> tuple[dict[str, dict], dict[str, str]]:
    """(methods that can run here, {skipped method: reason}) of a validated config."""
    runnable, skipped = {}, {}
    for name, params in config["methods"].items():
        reason = get_method(params["kind"]).unavailable_reason(config)
        if reason:
            skipped[name] = reason
        else:
            runnable[name] = params
    return runnable, skipped


def method_Ks(config: Mapping[str, Any], name: str) -> list[int]:
    """The K values a method is scored at: its own ``K``, else ``features.K``; [0] if K-free."""
    params = config["methods"][name]
    if not get_method(params["kind"]).uses_K:
        return [NO_K]
    return list(params.get("K") or config["features"]["K"])


def method_splits(config: Mapping[str, Any], name: str) -> list[str]:
    """The configured query splits the method scores."""
    method = get_method(config["methods"][name]["kind"])
    return [s for s in config["lds"]["splits"] if s in method.query_splits]


def method_targets(
    config: Mapping[str, Any], methods: Mapping[str, Any]
) -> list[tuple[str, int, str]]:
    """Every (method, K, split) with a score file and an LDS record, in config order."""
    return [
        (name, K, split)
        for name in methods
        for K in method_Ks(config, name)
        for split in method_splits(config, name)
    ]


def job_params(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The params a scoring job sees: the kind's own params (K is a wildcard, not a param)."""
    return {k: v for k, v in config["methods"][name].items() if k not in ("kind", "K")}


def method_needs(config: Mapping[str, Any], name: str, K: int, split: str) -> dict[str, list[Need]]:
    """The named input files of one scoring job; ConfigError for a (K, split) it does not score."""
    if K not in method_Ks(config, name) or split not in method_splits(config, name):
        raise ConfigError(
            f"method {name!r} is not scored at K={K} on split {split!r}; it is scored at "
            f"K in {method_Ks(config, name)} on {method_splits(config, name)}"
        )
    method = get_method(config["methods"][name]["kind"])
    return method.needs(config["methods"][name], K, split)


__all__ = [
    "NO_K",
    "Method",
    "Need",
    "ScoreJob",
    "get_method",
    "job_params",
    "method_Ks",
    "method_kinds",
    "method_needs",
    "method_splits",
    "method_targets",
    "register",
    "runnable_methods",
    "validate_methods",
]
