"""serving: server models on keep-alive ping and authenticated uncached detail.

All servers run side by side and the wrk runs alternate between them (each
repeat starts with a different server), so drift in the machine's load hits
every model alike. The first configuration is the reference (sync gunicorn);
each row gives its ratio to it, from the same run. wrk keeps its connections
alive: a server that closes them pays for a new connection per request.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack
from pathlib import Path

from bench.harness import Harness, wrk_row
from bench.report import target
from bench.stack import server
from bench.wrk import WrkResult

KINDS = ("ping", "detail")
NAMES = {
    "ping": "ping keep-alive [{}]",
    "detail": "product detail uncached, authenticated [{}]",
}
# Every configuration of bench/cli.py's server_configs but the "main" alias.
CONFIGS = (
    "sync",
    "gthread",
    "granian",
    "granian-threads",
    "granian-asgi",
    "granian-wsgi",
    "raw",
)

Runs = dict[str, dict[str, list[WrkResult]]]


def run(h: Harness, args: argparse.Namespace) -> None:
    """Serve every configuration at once, load them in turn, add two rows each."""
    configs = [h.servers[name] for name in CONFIGS]
    detail = [f"{h.api}/products/{pk}/" for pk in h.sample.product_ids]
    probe_paths, wrk_paths = detail[-h.options.probe :], detail[: -h.options.probe]
    files = {"ping": h.paths_file(["/healthz"]), "detail": h.paths_file(wrk_paths)}
    # The constant answer of the raw server has no product detail.
    measured = {
        c.label: KINDS[:1] if c.worker_class == "raw" else KINDS for c in configs
    }
    with ExitStack() as servers:
        urls = {c.label: servers.enter_context(server(h.stack, c)) for c in configs}
        headers, server_ms = _probe_each(h, urls, measured, detail[0], probe_paths)
        runs = _alternate(h, urls, measured, files, headers)
    _add_rows(h, runs, server_ms, measured, len(wrk_paths), configs[0].label)


def _probe_each(
    h: Harness,
    urls: dict[str, str],
    measured: dict[str, tuple[str, ...]],
    first: str,
    probe_paths: list[str],
) -> tuple[dict[str, str], dict[str, float | None]]:
    """Sign in once; return the bearer header and each server's detail ms."""
    headers: dict[str, str] = {}
    server_ms: dict[str, float | None] = {}
    for label, url in urls.items():
        if "detail" not in measured[label]:
            continue
        h.use_server(url)
        headers = headers or h.bearer("user")
        h.require(first, headers)
        h.stack.flush_cache()
        server_ms[label], _, _ = h.probe(probe_paths, headers)
    return headers, server_ms


def _alternate(
    h: Harness,
    urls: dict[str, str],
    measured: dict[str, tuple[str, ...]],
    files: dict[str, Path],
    headers: dict[str, str],
) -> Runs:
    """Run wrk options.repeat times per server and kind, servers in turn."""
    runs: Runs = {label: {kind: [] for kind in measured[label]} for label in urls}
    order = list(urls)
    for repeat in range(h.options.repeat):
        shift = repeat % len(order)
        for label in order[shift:] + order[:shift]:
            for kind in measured[label]:
                h.stack.flush_cache()
                runs[label][kind].append(
                    h.wrk(
                        files[kind],
                        h.options.duration,
                        headers if kind == "detail" else None,
                        base_url=urls[label],
                    )
                )
    return runs


def _add_rows(
    h: Harness,
    runs: Runs,
    server_ms: dict[str, float | None],
    measured: dict[str, tuple[str, ...]],
    wrk_paths: int,
    reference_label: str,
) -> None:
    """Add each server's rows; rates also as a ratio to the first server's."""
    reference: dict[str, float] = {}
    for label, results_by_kind in runs.items():
        ping_rps = statistics.median(r.rps for r in results_by_kind["ping"])
        for kind, results in results_by_kind.items():
            rps = statistics.median(r.rps for r in results)
            notes = [
                f"median of {len(results)}: "
                + " / ".join(f"{r.rps:,.0f}" for r in results)
            ]
            if kind == "detail":
                notes.append("x ping: this server's ping")
                if max(r.requests for r in results) > wrk_paths:
                    notes.append("keys wrapped: some requests may have hit")
            if kind in reference:
                ratio = rps / reference[kind]
                notes.append(f"{ratio:.2f}x {reference_label}")
                if kind == "ping" and measured[label] == KINDS:
                    notes.append(target(ratio, 2, below=False, label="x today"))
            else:
                reference[kind] = rps
            detail = kind == "detail"
            row = wrk_row(
                NAMES[kind].format(label),
                results,
                ratio=rps / ping_rps if detail else 1.0,
                server_ms=server_ms[label] if detail else None,
            )
            row.notes = notes
            h.add(row)
