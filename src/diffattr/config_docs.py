"""docs/configuration.md, generated from the packaged config schema (the single source of truth).

The schema ships in the wheel as ``diffattr/schemas/config.schema.yaml``.

``diffattr config-docs`` rewrites the file; ``diffattr config-docs --check`` (and the test suite)
fails when the file and the schema disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffattr.schema import SCHEMA_PATH, load_schema
from diffattr.tables import markdown_table


def default_docs_path() -> Path:
    """docs/configuration.md of the checkout this package runs from (``src/`` layout), else of
    the working directory (an installed wheel checks the checkout it is run in)."""
    checkout = SCHEMA_PATH.parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "docs").is_dir():
        return checkout / "docs" / "configuration.md"
    return Path.cwd() / "docs" / "configuration.md"


DOCS_PATH = default_docs_path()

HEADER = """\
# Configuration reference

<!-- Generated from src/diffattr/schemas/config.schema.yaml by `diffattr config-docs`; do not edit by hand.
     A test fails when this file and the schema disagree. -->

A run is configured by one YAML file: `config.yaml` (the embedded default, a CPU demo) or a
complete configuration passed with `--configfile` (the paper settings in `experiments/`). It is
validated against `src/diffattr/schemas/config.schema.yaml` before any job starts: unknown keys are rejected
(with the closest valid key), and every key below that has a default may be left out.
"""


def render_markdown(schema: dict[str, Any] | None = None) -> str:
    """The reference page: one section per top-level block, one table row per key."""
    schema = schema or load_schema()
    lines = [HEADER]
    required = set(schema.get("required", []))
    blocks = {name: _resolve(schema, node) for name, node in schema["properties"].items()}
    scalars = [
        (name, node, name in required)
        for name, node in blocks.items()
        if node.get("type") != "object"
    ]
    if scalars:
        lines += ["## Top level", "", *_table(schema, scalars, prefix="")]
    for name, node in blocks.items():
        if node.get("type") != "object":
            continue
        if "properties" not in node:
            lines += _free_block(schema, name, node, name in required)
            continue
        lines += [f"## `{name}`" + (" (required)" if name in required else ""), ""]
        if node.get("description"):
            lines += [_clean(node["description"]), ""]
        lines += _table(schema, _fields(schema, node), prefix=f"{name}.")
        for key, child in node["properties"].items():
            child = _resolve(schema, child)
            if child.get("type") == "object" and "properties" in child:
                lines += [f"### `{name}.{key}`", ""]
                if child.get("description"):
                    lines += [_clean(child["description"]), ""]
                lines += _table(schema, _fields(schema, child), prefix=f"{name}.{key}.")
    return "\n".join(lines).rstrip() + "\n"


def _free_block(schema: dict, name: str, node: dict, required: bool) -> list[str]:
    """A block whose keys are free (e.g. ``methods``: name -> settings)."""
    lines = [f"## `{name}`" + (" (required)" if required else ""), ""]
    if node.get("description"):
        lines += [_clean(node["description"]), ""]
    if "default" in node:
        lines += [f"Default: `{_value(node['default'])}`", ""]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        lines += [f"Each entry `{name}.<name>` has:", ""]
        lines += _table(schema, _fields(schema, extra), prefix=f"{name}.<name>.")
    elif not extra or extra is True:
        lines += ["Free-form mapping; see the description.", ""]
    return lines


def _fields(schema: dict, node: dict) -> list[tuple[str, dict, bool]]:
    required = set(node.get("required", []))
    return [
        (key, _resolve(schema, child), key in required)
        for key, child in node.get("properties", {}).items()
    ]


def _table(schema: dict, fields: list[tuple[str, dict, bool]], prefix: str) -> list[str]:
    rows = []
    for key, node, required in fields:
        default = (
            "**required**"
            if required
            else (f"`{_value(node['default'])}`" if "default" in node else "–")
        )
        rows.append(
            {
                "key": f"`{prefix}{key}`",
                "type": _type(node),
                "default": default,
                "description": _clean(node.get("description", "")),
            }
        )
    return [markdown_table(rows, ["key", "type", "default", "description"]), ""]


def _resolve(schema: dict, node: dict) -> dict:
    """Follow a local ``$ref`` (``#/$defs/...``), keeping the referring node's own keys."""
    if "$ref" not in node:
        return node
    target: Any = schema
    for part in node["$ref"].lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{_value(v)}`" for v in node["enum"])
    kind = node.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(str(k) for k in kinds)
    if "array" in kinds and isinstance(node.get("items"), dict):
        items = node["items"]
        text += f" of {_type(items)}"
    bounds = []
    for word, symbol in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if word in node:
            bounds.append(f"{symbol} {node[word]}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _clean(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def write_docs(path: str | Path = DOCS_PATH) -> Path:
    from diffattr.store import write_text

    write_text(path, render_markdown())
    return Path(path)


def docs_are_current(path: str | Path = DOCS_PATH) -> bool:
    path = Path(path)
    return path.is_file() and path.read_text(encoding="utf-8") == render_markdown()
