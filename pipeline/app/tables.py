"""Plain-text and Markdown tables for the command-line tools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int | None = 60) -> str:
    """A plain-text table; cells are cut to ``max_width`` characters (None: shown in full)."""
    cells: list[list[str]] = [[_cell(v)[:max_width] for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(escape(_cell(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def format_point(point: Mapping[str, int]) -> str:
    """``batch=8, seq=128``: a shape by its dimension sizes, as the console and ``inspect`` name it."""
    return ", ".join(f"{name}={size}" for name, size in point.items())
