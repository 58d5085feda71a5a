"""Config validation against ``src/diffattr/schemas/config.schema.yaml``: defaults filled, clear errors.

The schema is the single source of truth for keys and defaults. Errors name the offending key
path, the bad value and what would be valid; unknown keys are rejected with the list of known
ones (and the closest match, for typos).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from diffattr.errors import ConfigError
from diffattr.schema import SCHEMA_PATH, load_schema, schema_default, schema_defaults, schema_field

__all__ = [
    "SCHEMA_PATH",
    "deep_merge",
    "load_config",
    "load_schema",
    "schema_default",
    "schema_defaults",
    "schema_field",
    "validate_config",
]


def _with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Iterator:
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                subschema = _resolve(validator, subschema)
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _resolve(validator: Any, subschema: dict) -> dict:
    if "$ref" in subschema:
        return validator._resolver.lookup(subschema["$ref"]).contents
    return subschema


DefaultingValidator = _with_defaults(Draft202012Validator)


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a validated copy of ``config`` with every default filled in.

    Raises :class:`ConfigError` for the first problem found, phrased for a person.
    """
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    validator = DefaultingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        raise ConfigError(describe_error(_most_specific(errors[0]), schema))
    _check_consistency(config)
    if "methods" in config:  # per-kind params and defaults live with each method kind
        from diffattr.methods import validate_methods

        config["methods"] = validate_methods(config)
    return config


def _check_consistency(config: dict[str, Any]) -> None:
    """Cross-key checks the schema cannot express, so a bad pair fails before any job runs."""
    model = config.get("model") or {}
    data = config.get("data") or {}
    if model.get("kind", "unet") == "unet" and isinstance(model.get("unet"), dict):
        pairs = (("sample_size", "resolution"), ("in_channels", "channels"))
        for unet_key, data_key in pairs:
            value, expected = model["unet"].get(unet_key), data.get(data_key)
            if value is not None and expected is not None and value != expected:
                raise ConfigError(
                    f"config: model.unet.{unet_key} = {value!r} differs from data.{data_key} = "
                    f"{expected!r}; the UNet sees the preprocessed images, so set "
                    f"model.unet.{unet_key}: {expected!r} (or data.{data_key}: {value!r})"
                )
        features = config.get("features") or {}
        steps = (config.get("scheduler") or {}).get("num_train_timesteps")
        if features.get("t_strategy", "uniform") == "uniform" and isinstance(steps, int):
            bad = [K for K in features.get("K", []) if steps % K]
            if bad:
                valid = [d for d in range(1, steps + 1) if steps % d == 0]
                raise ConfigError(
                    f"config: features.K = {bad[0]!r} does not divide scheduler."
                    f"num_train_timesteps = {steps} (uniform timesteps are range(0, T, T // K)); "
                    f"valid K: {', '.join(map(str, valid))}"
                )


def _most_specific(error: ValidationError) -> ValidationError:
    while error.context:
        error = min(error.context, key=lambda e: -len(e.path))
    return error


def describe_error(error: ValidationError, schema: dict[str, Any]) -> str:
    """One readable sentence: where, what was found, what would be valid."""
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return (
            f"config: unknown key {', '.join(hints)} in {where}; valid keys are: "
            f"{', '.join(allowed) if allowed else '(none)'}"
        )
    if error.validator == "required":
        return f"config: {where} is missing a required key: {error.message}"
    if error.validator == "enum":
        valid = ", ".join(repr(v) for v in error.validator_value)
        return f"config: {where} = {error.instance!r} is not valid; choose one of: {valid}"
    if error.validator in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        bound = {
            "minimum": ">=",
            "maximum": "<=",
            "exclusiveMinimum": ">",
            "exclusiveMaximum": "<",
        }[error.validator]
        return f"config: {where} = {error.instance!r} is out of range; it must be {bound} {error.validator_value}"
    if error.validator == "type":
        return f"config: {where} = {error.instance!r} has the wrong type; expected {error.validator_value}"
    description = error.schema.get("description", "")
    return f"config: {where} = {error.instance!r}: {error.message}" + (
        f" ({description})" if description else ""
    )


def load_config(*paths: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load YAML files (later ones deep-merged over earlier ones) and validate them."""
    merged: dict[str, Any] = {}
    for path in paths:
        with open(path) as handle:
            deep_merge(merged, yaml.safe_load(handle) or {})
    if overrides:
        deep_merge(merged, overrides)
    return validate_config(merged)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into ``base`` in place, recursing into nested dicts (Snakemake semantics)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base
