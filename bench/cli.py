"""`python -m bench`: seed, serve, load, and print one table."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import data
from bench.groups import (
    admin,
    cache,
    cluster,
    imports,
    localcache,
    mix,
    mixed,
    ping,
    products,
    scale,
    serving,
    users,
)
from bench.harness import Harness, Options
from bench.report import render_text, write_markdown
from bench.stack import RESULTS_DIR, ServerConfig, Stack, server, short_commit
from bench.wrk import ensure_wrk

Step = Callable[[Harness, argparse.Namespace], None]


@dataclass(frozen=True)
class Group:
    """A scenario group: its door, and whether it runs on the shared main server.

    Served groups run in turn against one server started once; the others
    start the servers they need themselves.
    """

    run: Step
    served: bool = False


# The groups in the order they run (served ones first, on the main server).
GROUPS: dict[str, Group] = {
    "admin": Group(admin.run, served=True),
    "cache": Group(cache.run, served=True),
    "mixed": Group(mixed.run, served=True),
    "users": Group(users.run, served=True),
    "products": Group(products.run, served=True),
    "mix": Group(mix.run),
    "serving": Group(serving.run),
    "import": Group(imports.run),
    "localcache": Group(localcache.run),
    "scale": Group(scale.run, served=True),
    # Its own PostgreSQL pair, Redis and servers (bench/cluster.py).
    "cluster": Group(cluster.run),
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Serve the app with production settings against a scratch database "
            "(seeded to the requested size, reused when it already matches), drive "
            "it with wrk and print one table. ping (/healthz) always runs: every "
            "ratio is taken against it."
        ),
    )
    parser.add_argument(
        "--products", type=int, default=1_000_000, help="catalog size (1,000,000)"
    )
    parser.add_argument("--users", type=int, default=100_000, help="users (100,000)")
    parser.add_argument("--categories", type=int, default=20, help="categories (20)")
    parser.add_argument("--seed", type=int, default=1, help="seed_demo --seed")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run (default all): {','.join(GROUPS)}",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--repeat", type=_positive, default=3, help="wrk runs per scenario (median)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--admin-connections", type=int, default=4, help="wrk connections for admin"
    )
    parser.add_argument(
        "--probe", type=int, default=20, help="sequential requests for server ms"
    )
    parser.add_argument(
        "--paired-repeat",
        type=_positive,
        default=5,
        help="runs of each cached scenario, each paired with ping (median ratio)",
    )
    parser.add_argument(
        "--bulk-repeat", type=int, default=5, help="bulk requests per kind (median)"
    )
    parser.add_argument(
        "--dashboard-samples", type=int, default=10, help="uncached dashboard GETs"
    )
    parser.add_argument(
        "--row-sample", type=int, default=2000, help="rows saved one by one"
    )
    parser.add_argument(
        "--server",
        choices=["granian", "sync", "gthread"],
        default="granian",
        help="configuration serving every group but serving (default granian)",
    )
    parser.add_argument(
        "--granian-workers", type=int, default=4, help="granian worker processes"
    )
    parser.add_argument(
        "--granian-threads", type=int, default=1, help="threads per granian worker"
    )
    parser.add_argument("--workers", type=int, default=3, help="sync workers")
    parser.add_argument(
        "--gthread-workers", type=int, default=2, help="gthread worker processes"
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per gthread worker"
    )
    parser.add_argument(
        "--mix-steps",
        default="4,8,16,32,64,128",
        help="mix: wrk connections of the concurrency steps (4,8,16,32,64,128)",
    )
    parser.add_argument(
        "--mix-step-duration", type=_positive, default=10, help="mix: seconds a step"
    )
    parser.add_argument(
        "--mix-repeat",
        type=_positive,
        default=1,
        help="mix: runs of the whole ladder of steps; each step shows its median (1)",
    )
    parser.add_argument(
        "--mix-hold",
        type=_positive,
        default=60,
        help="mix: seconds holding 70%% of the knee's rate (60)",
    )
    parser.add_argument(
        "--mix-users", type=_positive, default=32, help="mix: signed-in users (32)"
    )
    parser.add_argument(
        "--mix-detail-ids",
        type=_positive,
        default=1000,
        help="mix: products the detail reads pick from at random (1,000)",
    )
    parser.add_argument(
        "--mix-list-pages",
        type=_positive,
        default=50,
        help="mix: list pages of 20 the list reads pick from (50: offsets 0-980)",
    )
    parser.add_argument(
        "--cluster-products",
        type=_positive,
        default=100_000,
        help="cluster: products seeded into the cluster's own database (100,000)",
    )
    parser.add_argument(
        "--cluster-users",
        type=_positive,
        default=10_000,
        help="cluster: users seeded into it (10,000)",
    )
    parser.add_argument(
        "--mix-server-root",
        type=Path,
        default=None,
        help="mix: also serve this checkout of the project (e.g. a git worktree "
        "of an older commit) with the same database and settings, and compare",
    )
    parser.add_argument(
        "--mix-server",
        choices=["sync", "gthread", "granian"],
        default="sync",
        help="mix: how --mix-server-root is served (default sync: d231dca's "
        "default, the issue's reference; granian: as this checkout is)",
    )
    parser.add_argument(
        "--scale-import",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale: also time import_products of the full export (default on)",
    )
    parser.add_argument(
        "--database",
        default="bench",
        help="scratch database (dropped and re-seeded when its size differs)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/1",
        help="scratch Redis database (flushed during the run)",
    )
    parser.add_argument(
        "--output",
        default=str(RESULTS_DIR / "latest.md"),
        help="markdown copy of the table",
    )
    args = parser.parse_args(argv)
    try:
        args.mix_steps = tuple(
            _positive(step) for step in args.mix_steps.split(",") if step.strip()
        )
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"--mix-steps: {exc}")
    if not args.mix_steps:
        parser.error("--mix-steps needs at least one step")
    root = args.mix_server_root
    if root is not None and not (root / "manage.py").is_file():
        parser.error(f"--mix-server-root {root}: no manage.py there")
    args.groups = [
        g.strip() for g in args.only.split(",") if g.strip() and g.strip() != "ping"
    ]
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(
            f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    return args


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _guard(h: Harness, args: argparse.Namespace, name: str, step: Step) -> None:
    """Run one group; a failure becomes a row saying so, and the run goes on."""
    _log(f"{name}")
    try:
        step(h, args)
    except Exception as exc:  # noqa: BLE001 - report and carry on with the others
        traceback.print_exc(file=sys.stderr)
        h.skip(name, f"failed: {type(exc).__name__}: {str(exc)[:200]}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return the exit status."""
    args = parse_args(argv)
    # A terminated run unwinds like Ctrl-C: its servers and wrk are stopped
    # (they would go on serving and loading the machine) and its data restored.
    signal.signal(signal.SIGTERM, _interrupt)
    ensure_wrk()
    if args.groups == ["cluster"]:
        return _run_cluster_only(args, argv)
    stack = Stack(database=args.database, redis_url=args.redis_url)
    # Two runs on one scratch database would truncate and reseed under each
    # other: hold a session advisory lock for the whole run.
    lock = stack.connect(database="postgres")
    key = f"bench:{stack.database}"
    if not lock.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [key]).fetchone()[
        0
    ]:
        lock.close()
        print(
            f"another benchmark run is using database {stack.database!r}; "
            "wait for it or pass --database",
            file=sys.stderr,
        )
        return 1
    try:
        return _run(args, argv, stack)
    finally:
        lock.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def server_configs(args: argparse.Namespace) -> dict[str, ServerConfig]:
    """Return the ways to serve the project, by name; "main" serves the groups."""
    granian_label = f"{args.granian_workers}x{args.granian_threads}"
    # Half the processes, four threads each: 2x4, the default before 4x1.
    threaded_workers = max(1, args.granian_workers // 2)
    configs = {
        "sync": ServerConfig(
            f"gunicorn sync x{args.workers}, persistent",
            workers=args.workers,
            worker_class="sync",
        ),
        "gthread": ServerConfig(
            f"gunicorn gthread {args.gthread_workers}x{args.threads}, pool",
            workers=args.gthread_workers,
            worker_class="gthread",
            threads=args.threads,
            db_connections="pool",
        ),
        "granian": ServerConfig(
            f"granian {granian_label}",
            workers=args.granian_workers,
            threads=args.granian_threads,
        ),
        # Handler threads in fewer processes: a process's threads share its GIL.
        "granian-threads": ServerConfig(
            f"granian {threaded_workers}x4, threads",
            workers=threaded_workers,
            threads=4,
        ),
        "granian-asgi": ServerConfig(
            f"granian ASGI {granian_label}",
            workers=args.granian_workers,
            worker_class="granian-asgi",
            threads=args.granian_threads,
        ),
        "granian-wsgi": ServerConfig(
            f"granian WSGI {granian_label}, no front",
            workers=args.granian_workers,
            worker_class="granian-wsgi",
            threads=args.granian_threads,
        ),
        "raw": ServerConfig(
            f"granian raw ASGI x{args.granian_workers} (ceiling)",
            workers=args.granian_workers,
            worker_class="raw",
        ),
    }
    return {**configs, "main": configs[args.server]}


def _run(args: argparse.Namespace, argv: list[str] | None, stack: Stack) -> int:
    """Seed, serve, run the selected groups and print the table."""
    size = data.Size(args.products, args.users, args.categories, args.seed)
    stack.log_path.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    data.prepare(stack, size, log=_log)
    stack.flush_cache()
    h = Harness(
        stack,
        _options(args),
        _log,
        size=size,
        sample=data.sample(stack, seed=args.seed),
        servers=server_configs(args),
    )
    _run_groups(h, args)
    print(render_text(h.rows))
    write_markdown(
        Path(args.output),
        h.rows,
        _command(argv),
        _context(args, h, load_before, started),
    )
    _log(f"wrote {args.output}")
    for step in h.after_report:
        step()
    return 0


def _run_cluster_only(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the cluster group alone: it brings its own stores, so no scratch seed."""
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    rows = cluster.cluster_rows(args, _log)
    print(render_text(rows))
    write_markdown(
        Path(args.output),
        rows,
        _command(argv),
        cluster.context(args, load_before, started),
    )
    _log(f"wrote {args.output}")
    return 0


def _options(args: argparse.Namespace) -> Options:
    return Options(
        duration=args.duration,
        repeat=args.repeat,
        paired_repeat=args.paired_repeat,
        connections=args.connections,
        admin_connections=args.admin_connections,
        probe=args.probe,
        bulk_repeat=args.bulk_repeat,
        dashboard_samples=args.dashboard_samples,
        row_sample=args.row_sample,
    )


def _run_groups(h: Harness, args: argparse.Namespace) -> None:
    """Run ping and the served groups on the main server, then the others."""
    chosen = {name: g for name, g in GROUPS.items() if name in args.groups}
    served = {name: g for name, g in chosen.items() if g.served}
    _log(f"serving with {h.servers['main'].label}")
    with server(h.stack, h.servers["main"]) as base_url:
        h.use_server(base_url)
        _guard(h, args, "ping", ping.run)
        for name, group in served.items():
            _guard(h, args, name, group.run)
        if served:
            _guard(h, args, "ping again", ping.again)
    for name, group in chosen.items():
        if name not in served:
            _guard(h, args, name, group.run)


def _command(argv: list[str] | None) -> str:
    given = argv or sys.argv[1:]
    return "make bench" + (f' ARGS="{shlex.join(given)}"' if given else "")


def _context(
    args: argparse.Namespace, h: Harness, load_before: float, started: float
) -> list[str]:
    """Return the lines saying what was measured where, under the table."""
    commit = short_commit()
    size, stack = h.size, h.stack
    return [
        f"Data: {size.products:,} products, {size.users:,} users, "
        f"{size.categories} categories (seed {size.seed}); commit {commit or '?'}.",
        f"Server: {h.servers['main'].label} unless the row says otherwise; "
        f"DEBUG=False; database {stack.database!r}; Redis {stack.redis_url}.",
        f"Load: wrk -t1 -c{args.connections} (admin -c{args.admin_connections}), "
        f"{args.duration} s per run, median of {args.repeat} runs (cached "
        f"scenarios: {args.paired_repeat} runs, each alternating with ping); wrk "
        "shares the machine's cores with the server.",
        f"Machine: {os.cpu_count()} cores; 1-minute load average {load_before:.1f} "
        f"at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"{(time.monotonic() - started) / 60:.0f} min.",
    ]
