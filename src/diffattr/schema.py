"""The packaged config schema (``schemas/config.schema.yaml``) and its defaults.

The schema is the one place a config default is written. Settings classes and data sources that
need a default take it from here (:func:`schema_default`, :func:`schema_defaults`,
:func:`schema_field`); validation against the schema is :mod:`diffattr.config`. This module
imports nothing of diffattr but the errors, so any module may use it without an import cycle.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from diffattr.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    with open(path or SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


@functools.lru_cache(maxsize=1)
def _packaged_schema() -> dict[str, Any]:
    return load_schema()


def schema_default(path: str) -> Any:
    """The schema's default of the key at dotted ``path`` (``"features.proj_dim"``), a copy.

    The one place a default is written is the schema; settings classes that need a default for a
    key the config also has take it from here (``tests/test_settings.py`` checks they do)."""
    node: dict[str, Any] = _packaged_schema()
    root = node
    for key in path.split("."):
        properties = node.get("properties", {})
        if key not in properties:
            raise ConfigError(f"the config schema has no key {path!r} (at {key!r})")
        node = properties[key]
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "default" not in node:
        raise ConfigError(f"the config schema gives {path!r} no default")
    return copy.deepcopy(node["default"])


def schema_defaults(path: str) -> dict[str, Any]:
    """{key: default} of every key of the object at dotted ``path`` (``"data"``); None for keys
    the schema gives no default (a copy)."""
    node: dict[str, Any] = _packaged_schema()
    for key in path.split("."):
        properties = node.get("properties", {})
        if key not in properties:
            raise ConfigError(f"the config schema has no key {path!r} (at {key!r})")
        node = properties[key]
    return {key: copy.deepcopy(sub.get("default")) for key, sub in node["properties"].items()}


def schema_field(path: str) -> Any:
    """A dataclass field whose default is :func:`schema_default` of ``path`` (read when an
    instance is made, so the schema stays the one place the default is written)."""
    import dataclasses

    return dataclasses.field(default_factory=lambda: schema_default(path))
