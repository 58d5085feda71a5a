"""Tables of result rows (mappings) as CSV, markdown and HTML text: the one renderer of each.

Each takes the rows and the columns to show, in order; a row lacking a column gets an empty
cell (markdown, HTML), while CSV refuses keys outside ``columns`` (``csv.DictWriter``). Floats
are written as the format reads best: CSV keeps Python's ``repr`` (round-trips exactly),
markdown ``{:g}``, HTML four significant digits (``–`` for NaN, no decimals from 10⁴ on).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

Rows = Sequence[Mapping[str, Any]]


def csv_text(rows: Rows, columns: Sequence[str]) -> str:
    """CSV with a header line, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(rows: Rows, columns: Sequence[str]) -> str:
    """A GitHub markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _markdown_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def html_table(rows: Rows, columns: Sequence[str]) -> str:
    """An HTML ``<table>`` with escaped header and cells, on one line."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_html_cell(row.get(c, '')))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
