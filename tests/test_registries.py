"""The config schema's closed vocabularies equal the library's registries and constants.

Every ``enum`` of ``src/diffattr/schemas/config.schema.yaml`` is either compared with the
registry or constant the library checks the value against (:data:`REGISTRIES`), or listed in
:data:`UNREGISTERED` with the reason it has none; a new enum is neither and fails
:func:`test_every_enum_is_classified`. The data sources' keys are compared with the schema's
``data`` block. Each comparison is shown to fail on a planted mismatch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from diffattr.config import load_schema


def _method_kinds() -> list[str]:
    from diffattr.methods import method_kinds

    return method_kinds()


def _output_functions() -> tuple[str, ...]:
    from diffattr.outputs import OUTPUT_FUNCTIONS

    return OUTPUT_FUNCTIONS


def _trak_output_functions() -> tuple[str, ...]:
    from diffattr.methods.trak import OUTPUT_FNS  # the parse-time copy (no torch)

    return OUTPUT_FNS


def _noise_schemes() -> tuple[str, ...]:
    from diffattr.noise import NOISE_SCHEMES

    return NOISE_SCHEMES


def _sources() -> tuple[str, ...]:
    from diffattr.data.sources import source_names

    return source_names()


def _channels() -> tuple[int, ...]:
    from diffattr.data.preprocess import VALID_CHANNELS

    return VALID_CHANNELS


def _model_kinds() -> tuple[str, ...]:
    from diffattr.models import MODEL_KINDS

    return MODEL_KINDS


def _precisions() -> list[str]:
    from diffattr.models import PRECISIONS

    return list(PRECISIONS)


def _timestep_strategies() -> tuple[str, ...]:
    from diffattr.features import TIMESTEP_STRATEGIES

    return TIMESTEP_STRATEGIES


def _projection_kinds() -> tuple[str, ...]:
    from diffattr.projection_structured import FEATURE_PROJECTION_KINDS

    return FEATURE_PROJECTION_KINDS


def _projections() -> tuple[str, ...]:
    from diffattr.projection_structured import PROJECTIONS

    return PROJECTIONS


def _allocations() -> tuple[str, ...]:
    from diffattr.projection_structured import ALLOCATIONS

    return ALLOCATIONS


def _mixers() -> tuple[str, ...]:
    from diffattr.projection_structured import MIXERS

    return MIXERS


def _checkpoint_percents() -> tuple[int, ...]:
    from diffattr.methods.gradient import CHECKPOINT_PERCENTS

    return CHECKPOINT_PERCENTS


def _readouts() -> tuple[str, ...]:
    from diffattr.methods.readout import READOUTS

    return READOUTS


def _ekfac_strategies() -> tuple[str, ...]:
    from diffattr.ekfac import STRATEGIES

    return STRATEGIES


def _query_splits() -> tuple[str, ...]:
    from diffattr.queries import QUERY_SPLITS

    return QUERY_SPLITS


def _gen_lambda_rules() -> tuple[str, ...]:
    from diffattr.lds import GEN_LAMBDA_RULES

    return GEN_LAMBDA_RULES


def _counterfactual_metrics() -> tuple[str, ...]:
    from diffattr.counterfactual import METRICS

    return METRICS


#: schema path of an enum (``*`` = any method name) -> the library's copies of its vocabulary
REGISTRIES: dict[str, tuple[Callable[[], Any], ...]] = {
    "data.source": (_sources,),
    "data.channels": (_channels,),
    "model.kind": (_model_kinds,),
    "training.mixed_precision": (_precisions,),
    "features.t_strategy": (_timestep_strategies,),
    "features.proj_kind": (_projection_kinds,),
    "features.projection": (_projections,),
    "features.structured_allocation": (_allocations,),
    "features.structured_mixer": (_mixers,),
    "features.noise": (_noise_schemes,),
    "measure.output": (_output_functions,),
    "methods.*.kind": (_method_kinds,),
    "methods.*.output_fn": (_output_functions, _trak_output_functions),
    "methods.*.noise": (_noise_schemes,),
    "methods.*.checkpoints": (_checkpoint_percents,),
    "methods.*.readout": (_readouts,),
    "methods.*.strategy": (_ekfac_strategies,),
    "lds.splits": (_query_splits,),
    "lds.gen_lambda": (_gen_lambda_rules,),
    "counterfactual.metrics": (_counterfactual_metrics,),
}

#: enums the library keeps no vocabulary of, and why
UNREGISTERED = {
    "scheduler.beta_schedule": "diffusers' DDPMScheduler names (test_beta_schedules_build)",
    "scheduler.prediction_type": "epsilon only: training and every output function take the "
    "UNet's prediction as the noise",
}


def schema_enums(schema: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """(dotted path, values) of every enum; array items report their array's path."""

    def walk(node: Any, path: list[str]) -> Iterator[tuple[str, list[Any]]]:
        if not isinstance(node, dict):
            return
        if "enum" in node:
            yield ".".join(path), list(node["enum"])
        for key, child in node.get("properties", {}).items():
            yield from walk(child, [*path, key])
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], [*path, "*"])
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], path)

    yield from walk(schema, [])
    for name, definition in schema.get("$defs", {}).items():
        yield from walk(definition, [f"$defs/{name}"])


def drift(schema: dict[str, Any]) -> list[str]:
    """Every enum of ``schema`` that differs from a library copy, or that is unclassified."""
    problems = []
    enums = dict(schema_enums(schema))
    for path in sorted(set(REGISTRIES) - set(enums)):
        problems.append(f"{path}: no enum in the schema")
    for path, values in enums.items():
        if path in UNREGISTERED:
            continue
        if path not in REGISTRIES:
            problems.append(f"{path}: an enum with no registry (add it to REGISTRIES)")
            continue
        if len(set(values)) != len(values):
            problems.append(f"{path}: the schema lists a value twice: {values}")
        for copy_of in REGISTRIES[path]:
            library = list(copy_of())
            if set(values) != set(library) or len(set(library)) != len(library):
                problems.append(f"{path}: schema {values} != {copy_of.__name__}() {library}")
    return problems


def source_key_drift(schema: dict[str, Any]) -> list[str]:
    """The schema's ``data`` keys are the common keys plus every source's keys."""
    from diffattr.data.sources import COMMON_KEYS, get_source, source_names

    keys = set(schema["properties"]["data"]["properties"])
    problems = []
    declared = set(COMMON_KEYS)
    for name in source_names():
        source = get_source(name)
        declared |= set(source.keys)
        unknown = sorted(set(source.keys) - keys)
        if unknown:
            problems.append(f"source {name!r} reads keys {unknown} that the schema lacks")
        common = sorted(set(source.keys) & set(COMMON_KEYS))
        if common:
            problems.append(f"source {name!r} declares common keys {common}")
    unused = sorted(keys - declared)
    if unused:
        problems.append(f"schema data keys {unused} are read by no source and are not common")
    missing = sorted(set(COMMON_KEYS) - keys)
    if missing:
        problems.append(f"common keys {missing} are not in the schema")
    return problems


SCHEMA = load_schema()


def test_the_schema_enums_equal_the_registries():
    assert drift(SCHEMA) == []


def test_every_enum_is_classified():
    paths = {path for path, _ in schema_enums(SCHEMA)}
    assert set(UNREGISTERED) <= paths, sorted(set(UNREGISTERED) - paths)
    assert paths == set(REGISTRIES) | set(UNREGISTERED)


def _enum_node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for key in path.split("."):
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node if "enum" in node else node["items"]


@pytest.mark.parametrize("path", sorted(REGISTRIES))
def test_a_planted_mismatch_is_found(path):
    added = copy.deepcopy(SCHEMA)
    _enum_node(added, path)["enum"].append("planted")
    assert drift(added) == [
        f"{path}: schema {_enum_node(added, path)['enum']} != {f.__name__}() {list(f())}"
        for f in REGISTRIES[path]
    ]
    removed = copy.deepcopy(SCHEMA)
    del _enum_node(removed, path)["enum"][0]
    assert len(drift(removed)) == len(REGISTRIES[path])
    assert all(problem.startswith(f"{path}: schema ") for problem in drift(removed))


def test_a_new_enum_or_a_lost_one_is_found():
    planted = copy.deepcopy(SCHEMA)
    planted["properties"]["measure"]["properties"]["mode"] = {"enum": ["a", "b"]}
    assert drift(planted) == ["measure.mode: an enum with no registry (add it to REGISTRIES)"]
    lost = copy.deepcopy(SCHEMA)
    del lost["properties"]["measure"]["properties"]["output"]["enum"]
    assert drift(lost) == ["measure.output: no enum in the schema"]


def test_the_data_block_holds_the_sources_keys():
    assert source_key_drift(SCHEMA) == []


def test_a_planted_source_key_mismatch_is_found():
    from diffattr.data.sources import base

    extra = copy.deepcopy(SCHEMA)
    extra["properties"]["data"]["properties"]["shards"] = {"type": "integer"}
    assert source_key_drift(extra) == [
        "schema data keys ['shards'] are read by no source and are not common"
    ]
    lacking = copy.deepcopy(SCHEMA)
    del lacking["properties"]["data"]["properties"]["csv"]
    assert source_key_drift(lacking) == [
        "source 'imagefolder' reads keys ['csv'] that the schema lacks"
    ]

    @base.register_source("planted_source", keys=("path", "shards"))
    def _planted(cfg):  # pragma: no cover - never loaded
        raise AssertionError

    try:
        assert source_key_drift(SCHEMA) == [
            "source 'planted_source' reads keys ['shards'] that the schema lacks"
        ]
        assert drift(SCHEMA) == [
            f"data.source: schema {_enum_node(SCHEMA, 'data.source')['enum']} != _sources() "
            f"{list(base.source_names())}"
        ]
    finally:
        del base._REGISTRY["planted_source"]
    assert source_key_drift(SCHEMA) == [] and drift(SCHEMA) == []


def test_a_source_registers_once_and_an_unknown_one_names_the_valid():
    from diffattr.data.sources import base, get_source
    from diffattr.errors import ConfigError

    with pytest.raises(ConfigError, match="'npz' is registered twice"):
        base.register_source("npz")(lambda cfg: None)
    with pytest.raises(ConfigError, match=r"'lmdb' is not a known source; valid: \['digits'"):
        get_source("lmdb")


def test_beta_schedules_build():
    from diffattr.models import build_scheduler

    for schedule in _enum_node(SCHEMA, "scheduler.beta_schedule")["enum"]:
        build_scheduler({"num_train_timesteps": 10, "beta_schedule": schedule})


def test_method_params_accept_every_schema_value():
    """The kinds' own checks accept the whole vocabulary the schema offers (DAS: its subset)."""
    from diffattr.methods import get_method, method_kinds
    from diffattr.methods.das import DAS_OUTPUT_FNS

    for kind in method_kinds():
        for key, param in get_method(kind).params.items():
            path = f"methods.*.{key}"
            if path not in REGISTRIES or param.check is None:
                continue
            values = _enum_node(SCHEMA, path)["enum"]
            if kind == "das" and key == "output_fn":
                assert set(DAS_OUTPUT_FNS) < set(values)
                values = list(DAS_OUTPUT_FNS)
            if key == "checkpoints":
                values = [values]
            for value in values:
                assert param.check(value) is None, (kind, key, value)
            assert param.check("planted") is not None, (kind, key)


def test_the_feature_projection_kinds_are_those_every_projection_implements():
    """``identity`` is a kind of the dense projector only (tests); the config offers none of it."""
    from diffattr.counter_rng import COUNTER_KINDS
    from diffattr.errors import ConfigError
    from diffattr.projection import PROJECTION_KINDS
    from diffattr.projection_structured import FEATURE_PROJECTION_KINDS, STRUCTURED_KINDS
    from diffattr.settings import ProjectionSettings

    assert set(FEATURE_PROJECTION_KINDS) == set(PROJECTION_KINDS) & set(COUNTER_KINDS) & set(
        STRUCTURED_KINDS
    )
    with pytest.raises(ConfigError, match="proj_kind = 'identity'"):
        ProjectionSettings(proj_kind="identity")
