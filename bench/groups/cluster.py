"""cluster: the seed mix through nginx over two instances, against one.

`make bench ARGS="--only cluster"` starts the topology of `make cluster`
(bench/cluster.py: its own PostgreSQL primary and standby, Redis, two app
instances, nginx with docker/nginx.conf), seeds it, and runs the mix's
concurrency ladder (bench/mix.py) against instance 1 directly and against
nginx in turn, step by step; the rows that matter are the ratios of the knees and peaks.
On one machine both instances share its cores with wrk, PostgreSQL and Redis,
so the ratio shows the cost of the extra hop and what a second instance adds
when cores are spare, not what two hosts would give.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from bench import data
from bench.cluster import running_cluster
from bench.harness import Harness
from bench.mix import Mix, MixRun, knee, median_run, options_from
from bench.report import Row
from bench.stack import RESULTS_DIR, short_commit


def _ids(mix: Mix, sql: str, params: list[int] | None = None) -> list[int]:
    with mix.stack.connect() as conn:
        return [row[0] for row in conn.execute(sql, params)]


def _row(label: str, run: MixRun, notes: list[str]) -> Row:
    return Row(
        label,
        rate=run.rps,
        p50_ms=run.p50_ms,
        p99_ms=run.p99_ms,
        errors=run.errors,
        notes=notes,
    )


def cluster_rows(args: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    """Start the cluster, run the mix's ladder on one instance and on nginx; rows."""
    seed = (
        "--users",
        str(args.cluster_users),
        "--products",
        str(args.cluster_products),
    )
    workdir = RESULTS_DIR / "cluster"
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"cluster: starting ({args.cluster_products:,} products)")
    with running_cluster(
        instances=2,
        workers=args.granian_workers,
        threads=args.granian_threads,
        seed=(*seed, "--categories", str(args.categories)),
        log_path=RESULTS_DIR / "cluster.log",
    ) as cluster:
        assert cluster.nginx is not None
        options = options_from(args)
        mix = Mix(
            cluster.stack,
            options,
            detail_ids=[],
            category_ids=[],
            workdir=workdir,
            log=log,
        )
        mix.detail_ids = _ids(
            mix,
            "SELECT id FROM catalog_product WHERE is_active ORDER BY id LIMIT %s",
            [options.detail_ids],
        )
        mix.category_ids = _ids(mix, "SELECT id FROM catalog_category ORDER BY id")
        data.django_side(cluster.stack, "mix-users", str(options.users))
        mix.user_ids = mix._user_ids()
        targets = [
            ("one instance", cluster.apps[0].base_url),
            ("nginx, two instances", cluster.nginx.base_url),
        ]
        mix._urls = [url for _, url in targets]
        tokens = mix.sign_in(cluster.nginx.base_url)
        runs: dict[str, list[list[MixRun]]] = {
            label: [[] for _ in options.steps] for label, _ in targets
        }
        turn = 0
        for _ in range(options.repeat):
            for index, connections in enumerate(options.steps):
                turn += 1
                # Alternate which side goes first, as the mix does.
                for label, url in targets if turn % 2 else targets[::-1]:
                    run = mix.measure(url, tokens, connections, options.step_s)
                    log(
                        f"  cluster {label} c={connections}: {run.rps:,.0f} req/s,"
                        f" p99 {run.p99_ms:,.0f} ms, {run.errors} errors"
                    )
                    runs[label][index].append(run)
    rows: list[Row] = []
    knees: dict[str, MixRun] = {}
    peaks: dict[str, MixRun] = {}
    for label, _ in targets:
        steps = [median_run(step_runs) for step_runs in runs[label]]
        index, reason = knee(steps)
        knees[label] = steps[index]
        peaks[label] = max(steps, key=lambda run: run.rps)
        for position, run in enumerate(steps):
            notes = [f"KNEE: {reason}"] if position == index else []
            rows.append(_row(f"cluster mix, {label}, c={run.connections}", run, notes))
    for kind, chosen in (("knee", knees), ("peak", peaks)):
        one, both = (chosen[label] for label, _ in targets)
        rows.append(
            Row(
                f"cluster mix {kind}: nginx + two instances / one instance",
                rate=both.rps,
                ratio=both.rps / one.rps if one.rps else None,
                notes=[
                    f"{both.rps:,.0f} vs {one.rps:,.0f} req/s at c={both.connections}"
                    f" vs c={one.connections}; p99 {both.p99_ms:,.0f} vs"
                    f" {one.p99_ms:,.0f} ms",
                    "x ping column: the ratio to one instance",
                ],
            )
        )
    return rows


def run(h: Harness, args: argparse.Namespace) -> None:
    """Run the group within a full bench run (its own stores, not the scratch ones)."""
    for row in cluster_rows(args, h.log):
        h.add(row)


def context(args: argparse.Namespace, load_before: float, started: float) -> list[str]:
    """Return the lines under the table of a run of this group alone."""
    return [
        f"Cluster: nginx (docker/nginx.conf) over 2 instances of granian "
        f"{args.granian_workers}x{args.granian_threads}, PostgreSQL primary + "
        f"streaming standby, Redis; {args.cluster_products:,} products; commit "
        f"{short_commit() or '?'}.",
        f"{os.cpu_count()} cores shared by every process; load average"
        f" {load_before:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"{(time.monotonic() - started) / 60:.0f} min.",
    ]
