"""The one results table, printed and written to bench/results/latest.md."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Row:
    """One scenario's figures; None prints as an em dash."""

    scenario: str
    rate: float | None = None
    unit: str = "req/s"
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    ratio: float | None = None
    server_ms: float | None = None
    notes: list[str] = field(default_factory=list)


HEADER = [
    "scenario",
    "rate",
    "p50 ms",
    "p99 ms",
    "errors",
    "x ping",
    "server ms",
    "notes",
]


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cells(row: Row) -> list[str]:
    rate = "—" if row.rate is None else f"{_number(row.rate)} {row.unit}"
    ratio = "—" if row.ratio is None else f"{row.ratio:.2f}x"
    return [
        row.scenario,
        rate,
        _number(row.p50_ms),
        _number(row.p99_ms),
        "—" if row.errors is None else str(row.errors),
        ratio,
        _number(row.server_ms),
        "; ".join(row.notes),
    ]


def render_text(rows: list[Row]) -> str:
    """Return the table as aligned plain text for a terminal."""
    table = [HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER) - 1)]
    lines = []
    for index, line in enumerate(table):
        head = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line[:-1])
        ]
        lines.append("  ".join([*head, line[-1]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -----")
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    """Return the table as GitHub markdown."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in _cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(
    path: Path, rows: list[Row], command: str, context: list[str]
) -> None:
    """Write the run's table, command and context to *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"# Benchmark results ({stamp})",
        "",
        f"Command: `{command}`",
        "",
        f"Python {platform.python_version()} on {platform.machine()}.",
        *[f"{line}" for line in context],
        "",
        render_markdown(rows),
        "",
        LEGEND,
    ]
    path.write_text("\n".join(body) + "\n")


LEGEND = """\
rate: wrk requests/s (median of the repeats) for load scenarios; requests/s of
one client sending one request after another for "1 conn" and single-shot
scenarios; rows/s for imports. p50/p99: client-side latency. errors: socket
errors plus non-2xx/3xx answers. x ping: rate divided by the ping rate measured
in the same run and the same mode (wrk against wrk, one connection against one
connection); rows noted "x ping paired" alternated short ping and scenario
runs within each repeat and show the median of the per-repeat ratios (per
repeat, their p50 is the median and their p99 the worst of the short runs).
server ms: median
X-Process-Time (the server's own time for the request) of sequential single
requests, or the figure named in the notes."""


def target(value: float, limit: float, *, below: bool, label: str) -> str:
    """Return a note saying whether *value* meets the target."""
    met = value < limit if below else value >= limit
    sign = "<" if below else ">="
    return f"{label} target {sign} {limit:g}: {'met' if met else 'NOT met'}"


def percentile(values: list[float], pct: float) -> float:
    """Return the *pct* percentile of *values* (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
