"""Plain-text and Markdown tables of evaluation metrics, one row per method or run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

# (metric key, column header) pairs.
PANOPTIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ap25", "AP25"), ("ap50", "AP50"), ("ap75", "AP75"), ("ap100", "AP100"),
    ("ap125", "AP125"), ("ap150", "AP150"), ("recall500", "Recall@500"), ("mpjpe", "MPJPE"),
)  # fmt: skip
ROOT_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (f"root_{key}", f"Root {header}") for key, header in PANOPTIC_COLUMNS
)
PCP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pcp_actor1", "Actor 1"), ("pcp_actor2", "Actor 2"), ("pcp_actor3", "Actor 3"),
    ("pcp_average", "Average"),
)  # fmt: skip


def format_metrics_table(
    rows: Mapping[str, Mapping[str, float]],
    columns: Sequence[tuple[str, str]] = PANOPTIC_COLUMNS,
    digits: int = 1,
    style: Literal["plain", "markdown"] = "plain",
    name_header: str = "Method",
) -> str:
    """Align metrics into a table: one row per entry of ``rows`` (in order), one column each.

    Args:
        rows: row name (method, run) -> metrics dict such as :func:`evaluate_panoptic`'s.
        columns: (metric key, header) pairs; a key missing from a row prints as ``-``.
        digits: decimals printed (AP and recall in percent, MPJPE in mm).
        style: ``plain`` (space-aligned, for terminals and logs) or ``markdown`` (a pipe table).
        name_header: header of the first column.

    Returns:
        The table, lines joined by newlines, without a trailing newline.
    """
    header = [name_header, *(h for _, h in columns)]
    body = [[name, *(_cell(metrics.get(key), digits) for key, _ in columns)]
            for name, metrics in rows.items()]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names read best left-aligned, numbers right-aligned so decimals line up.
        name, *values = cells
        parts = [name.ljust(widths[0])]
        parts += [v.rjust(w) for v, w in zip(values, widths[1:], strict=True)]
        return f"| {' | '.join(parts)} |" if style == "markdown" else "  ".join(parts)

    if style == "markdown":
        rule = ["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]
        lines = [line(header), f"| {' | '.join(rule)} |", *(line(r) for r in body)]
    elif style == "plain":
        lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    else:
        raise ValueError(f"unknown table style {style!r}; expected 'plain' or 'markdown'")
    return "\n".join(lines)


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"
