"""The seed article's mix as a load (issue 12): step to the knee, then hold 70% of it.

Every request carries the JWT of one of the mix's own users (signed in through
POST /auth/token/ before any measured window): 50% product detail, 20% a list
page of 20, 20% create, 5% PATCH or PUT and 5% DELETE of a product the caller
owns. wrk drives it with bench/lua/mix.lua. The mix's users own only mix
products (a pool made before each run, plus what the mix creates); all of it,
and the users, are deleted at the end, so the seeded data set is unchanged.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data
from bench.client import Client, jwt_access_token
from bench.report import Row, target
from bench.stack import (
    BENCH_EMAIL_DOMAIN,
    BENCH_PASSWORD,
    ROOT,
    ServerConfig,
    Stack,
    server,
)
from bench.wrk import WrkResult, run_wrk, wrk_command

MIX_EMAIL_PREFIX = "bench-mix-"
# The kinds by the letter their X-Request-ID starts with, and their shares.
KINDS = {"d": "detail", "l": "list", "c": "create", "u": "update", "x": "delete"}
SHARES = {"d": 0.50, "l": 0.20, "c": 0.20, "u": 0.05, "x": 0.05}
# The knee is the last step before one whose throughput grows less than
# KNEE_GROWTH or whose p99 is more than KNEE_P99_FACTOR times this step's.
KNEE_GROWTH = 0.10
KNEE_P99_FACTOR = 2.0
# More than any mix run has reached (see docs/benchmarks.md): sizes the pool
# of products to delete when the rate is not held.
RATE_CEILING = 3000.0
# The server has settled when this many /healthz in a row answer this fast.
SETTLED_PINGS = 3
SETTLED_PING_S = 0.1


def mix_email(index: int) -> str:
    """Return the email address of the mix's user number *index*."""
    return f"{MIX_EMAIL_PREFIX}{index:04d}@{BENCH_EMAIL_DOMAIN}"


@dataclass(frozen=True)
class MixOptions:
    """How the mix runs: steps, hold, users and the ids it addresses."""

    steps: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    step_s: int = 10
    # Runs of the whole ladder; each step shows its median run (by rate).
    repeat: int = 1
    hold_s: int = 60
    hold_share: float = 0.7
    users: int = 32
    detail_ids: int = 1000
    list_pages: int = 50
    threads: int = 1
    seed: int = 1


def options_from(args: Any) -> MixOptions:
    """Return the MixOptions of `python -m bench`'s --mix-* arguments."""
    return MixOptions(
        steps=args.mix_steps,
        step_s=args.mix_step_duration,
        repeat=args.mix_repeat,
        hold_s=args.mix_hold,
        users=args.mix_users,
        detail_ids=args.mix_detail_ids,
        list_pages=args.mix_list_pages,
        seed=args.seed,
    )


@dataclass(frozen=True)
class MixRun:
    """Figures of one wrk run of the mix (bench/lua/mix.lua's `done` hook)."""

    connections: int
    target_rate: float | None
    requests: int
    duration_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    socket_errors: int
    status_errors: int
    kinds: dict[str, int]
    bad: dict[str, int]
    hits: int
    misses: int
    exhausted: int
    cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        """Return the completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        """Return socket errors plus answers of 400 and above."""
        return self.socket_errors + self.status_errors

    @property
    def hit_ratio(self) -> float | None:
        """Return the share of detail reads answered from the cache."""
        seen = self.hits + self.misses
        return self.hits / seen if seen else None

    @property
    def cpu_us_per_request(self) -> float | None:
        """Return wrk's own CPU time (user + system) per completed request."""
        return self.cpu_s * 1e6 / self.requests if self.requests else None


def parse_run(
    line: str, *, connections: int, target_rate: float | None, cpu_s: float
) -> MixRun:
    """Return the MixRun of mix.lua's BENCH_JSON *line*."""
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return MixRun(
        connections=connections,
        target_rate=target_rate,
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        status_errors=data["status"],
        kinds={k: data[f"n_{k}"] for k in KINDS},
        bad={**{k: data[f"bad_{k}"] for k in KINDS}, "?": data["bad_other"]},
        hits=data["hits"],
        misses=data["misses"],
        exhausted=data["exhausted"],
        cpu_s=cpu_s,
    )


def run_mix_wrk(
    *,
    base_url: str,
    data_file: Path,
    duration_s: int,
    connections: int,
    rate: float | None = None,
    threads: int = 1,
    run_id: str = "run",
    seed: int = 1,
    timeout_s: int = 10,
    only_creates: bool = False,
) -> MixRun:
    """Drive the mix for *duration_s* seconds; hold *rate* req/s in all when given."""
    per_thread = rate / threads if rate else 0.0
    command = [
        *wrk_command(
            "mix.lua",
            threads=threads,
            connections=connections,
            duration_s=duration_s,
            timeout_s=timeout_s,
        ),
        base_url,
        "--",
        str(data_file),
        str(threads),
        run_id,
        str(seed),
    ]
    # The servers this process started are reaped only when they stop, so
    # the children's CPU time grows by wrk's alone during the run.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        command,
        env={
            **os.environ,
            "BENCH_MIX_RATE": f"{per_thread:.3f}",
            "BENCH_MIX_ONLY": "c" if only_creates else "",
        },
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 60,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return parse_run(
                line, connections=connections, target_rate=rate, cpu_s=cpu_s
            )
    raise RuntimeError(
        f"wrk failed (exit {completed.returncode}): {completed.stderr.strip()[-500:]}"
    )


def knee(runs: list[MixRun]) -> tuple[int, str]:
    """Return the index of the knee among concurrency *runs* and why it is there.

    The knee is the last step before the first one that adds less than
    KNEE_GROWTH throughput or more than doubles (KNEE_P99_FACTOR) p99; with
    neither, the last step.
    """
    for index, (here, after) in enumerate(zip(runs, runs[1:], strict=False)):
        growth = after.rps / here.rps - 1 if here.rps else 0.0
        if growth < KNEE_GROWTH:
            return index, (
                f"c={after.connections} adds {growth:+.0%} throughput"
                f" (< {KNEE_GROWTH:.0%})"
            )
        if here.p99_ms and after.p99_ms > KNEE_P99_FACTOR * here.p99_ms:
            return index, (
                f"c={after.connections} has p99 {after.p99_ms / here.p99_ms:.1f}x"
                f" (> {KNEE_P99_FACTOR:g}x)"
            )
    return len(runs) - 1, "throughput still grew at the last step: knee not reached"


def median_run(runs: list[MixRun]) -> MixRun:
    """Return the run with the median rate (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: run.rps)
    return ordered[(len(ordered) - 1) // 2]


@dataclass(frozen=True)
class PoolProduct:
    """A product of one of the mix's users: a target of updates and deletes."""

    id: int
    owner: int  # 1-based index of the owner's token
    category_id: int
    sku: str


def write_data_file(
    path: Path,
    *,
    api: str,
    pages: int,
    tokens: list[str],
    detail_ids: list[int],
    category_ids: list[int],
    pool: list[PoolProduct],
) -> Path:
    """Write what mix.lua reads: tokens, ids to read, categories and the pool."""
    lines = [f"api {api}", f"pages {pages}"]
    lines += [f"token {token}" for token in tokens]
    lines += [f"detail {pk}" for pk in detail_ids]
    lines += [f"category {pk}" for pk in category_ids]
    lines += [f"pool {p.id} {p.owner} {p.category_id} {p.sku}" for p in pool]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Side:
    """One server the mix runs against: this checkout, or a baseline checkout."""

    label: str
    config: ServerConfig
    root: Path = ROOT


@dataclass
class SideResult:
    """The steps and the hold measured against one side."""

    side: Side
    steps: list[MixRun] = field(default_factory=list)
    # Every run of each step, when the ladder ran more than once.
    step_runs: list[list[MixRun]] = field(default_factory=list)
    knee_index: int = 0
    knee_reason: str = ""
    hold: MixRun | None = None
    # Creates alone at the knee's connections, and ping (/healthz, keep-alive)
    # on the same server: signed-in writes as a ratio to the HTTP stack.
    creates: MixRun | None = None
    ping: WrkResult | None = None

    @property
    def knee(self) -> MixRun:
        """Return the knee's step."""
        return self.steps[self.knee_index]


class Mix:
    """Prepare the mix's users and pool, run steps and holds, restore the data."""

    def __init__(
        self,
        stack: Stack,
        options: MixOptions,
        *,
        detail_ids: list[int],
        category_ids: list[int],
        workdir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.options = options
        self.detail_ids = detail_ids[: options.detail_ids]
        self.category_ids = category_ids
        self.workdir = workdir
        self.log = log
        self.run_id = uuid.uuid4().hex[:6]
        self.user_ids: list[int] = []
        self._urls: list[str] = []
        self._serial = 0

    def run(self, sides: list[Side]) -> list[SideResult]:
        """Measure every side (the steps in turn, then the holds); restore the data."""
        options = self.options
        results = [SideResult(side) for side in sides]
        self.restore()
        try:
            data.django_side(self.stack, "mix-users", str(options.users))
            self.user_ids = self._user_ids()
            with ExitStack() as servers:
                urls = [
                    servers.enter_context(
                        server(self.stack, side.config, root=side.root)
                    )
                    for side in sides
                ]
                tokens = [self.sign_in(url) for url in urls]
                self._urls = urls
                sessions = list(zip(results, urls, tokens, strict=True))
                for result in results:
                    result.step_runs = [[] for _ in options.steps]
                turn = 0
                for _ in range(options.repeat):
                    for index, connections in enumerate(options.steps):
                        # Each step runs on every side in turn, alternating
                        # which goes first, so a machine whose speed drifts
                        # moves both sides alike.
                        turn += 1
                        for result, url, side_tokens in (
                            sessions if turn % 2 else sessions[::-1]
                        ):
                            run = self._step(result, url, side_tokens, connections)
                            result.step_runs[index].append(run)
                for result in results:
                    result.steps = [median_run(runs) for runs in result.step_runs]
                for result in results:
                    result.knee_index, result.knee_reason = knee(result.steps)
                for result, url, side_tokens in sessions:
                    self._hold(result, url, side_tokens)
                for result, url, side_tokens in sessions:
                    self._creates(result, url, side_tokens)
        finally:
            self.restore()
        return results

    def _step(
        self, result: SideResult, url: str, tokens: list[str], connections: int
    ) -> MixRun:
        """Run one concurrency step against one side."""
        run = self.measure(url, tokens, connections, self.options.step_s)
        self.log(
            f"  mix {result.side.label} c={connections}: {run.rps:,.0f} req/s,"
            f" p99 {run.p99_ms:,.0f} ms, {run.errors} errors"
        )
        return run

    def _hold(self, result: SideResult, url: str, tokens: list[str]) -> None:
        """Hold hold_share of the knee's rate with the knee's connections."""
        rate = self.options.hold_share * result.knee.rps
        hold = self.measure(
            url, tokens, result.knee.connections, self.options.hold_s, rate=rate
        )
        self.log(
            f"  mix {result.side.label} hold {rate:,.0f} req/s: {hold.rps:,.0f}"
            f" req/s, p99 {hold.p99_ms:,.0f} ms, {hold.errors} errors"
        )
        result.hold = hold

    def _creates(self, result: SideResult, url: str, tokens: list[str]) -> None:
        """Measure creates alone and ping on one side, one after the other."""
        connections = result.knee.connections
        result.ping = run_wrk(
            base_url=url,
            paths_file=self._ping_file(),
            duration_s=self.options.step_s,
            connections=64,
        )
        result.creates = self.measure(
            url, tokens, connections, self.options.step_s, only_creates=True
        )
        self.log(
            f"  mix {result.side.label} creates: {result.creates.rps:,.0f} req/s;"
            f" ping {result.ping.rps:,.0f} req/s"
        )

    def _ping_file(self) -> Path:
        path = self.workdir / "mix-ping.txt"
        path.write_text("/healthz\n")
        return path

    def restore(self) -> None:
        """Delete the mix's users and all they own; flush the cached pages."""
        data.remove_leftovers(self.stack)
        self.stack.flush_cache()

    def _user_ids(self) -> list[int]:
        with self.stack.connect() as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM accounts_user WHERE email LIKE %s ORDER BY email",
                    [f"{MIX_EMAIL_PREFIX}%@{BENCH_EMAIL_DOMAIN}"],
                )
            ]

    def sign_in(self, base_url: str) -> list[str]:
        """Return an access token of each mix user, signed in through *base_url*."""
        client = Client(base_url)
        tokens = []
        try:
            for index in range(len(self.user_ids)):
                try:
                    token = jwt_access_token(
                        client, self.stack.api_prefix, mix_email(index), BENCH_PASSWORD
                    )
                except RuntimeError:
                    # The login throttle (per client address) counts in the
                    # scratch Redis database: empty it and try once more.
                    self.stack.flush_cache()
                    token = jwt_access_token(
                        client, self.stack.api_prefix, mix_email(index), BENCH_PASSWORD
                    )
                tokens.append(token)
        finally:
            client.close()
        return tokens

    def settle(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        """Wait until the server has worked off what an earlier run left queued.

        A server keeps answering requests that were queued when wrk stopped
        (up to one per connection): deletes among them would remove products
        of the next run's pool, and their work would slow the next run down.
        It asks for a cached API read, which queues behind them: /healthz is
        answered by the server's front without waiting for handler threads.
        """
        client = Client(base_url, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        quick = 0
        path = f"{self.stack.api_prefix}/categories/"
        try:
            while quick < SETTLED_PINGS and time.monotonic() < deadline:
                response = client.get(path)
                quick = quick + 1 if response.wall_s < SETTLED_PING_S else 0
                time.sleep(0.05)
        finally:
            client.close()

    def warm(self, base_url: str) -> None:
        """Read every product the detail reads pick from once, as a server in
        steady state would have them cached: the run then shows what its own
        writes invalidate, not a cold start."""
        client = Client(base_url)
        try:
            for pk in self.detail_ids:
                client.get(f"{self.stack.api_prefix}/products/{pk}/")
        finally:
            client.close()

    def pool(self) -> list[PoolProduct]:
        """Return every product the mix's users own now, by id."""
        owners = {pk: index + 1 for index, pk in enumerate(self.user_ids)}
        with self.stack.connect() as conn:
            rows = conn.execute(
                "SELECT id, owner_id, category_id, sku FROM catalog_product"
                " WHERE owner_id = ANY(%s) ORDER BY id",
                [self.user_ids],
            ).fetchall()
        return [PoolProduct(r[0], owners[r[1]], r[2], r[3]) for r in rows]

    def measure(
        self,
        base_url: str,
        tokens: list[str],
        connections: int,
        duration_s: int,
        *,
        rate: float | None = None,
        only_creates: bool = False,
    ) -> MixRun:
        """Run the mix once, after making sure the pool outlasts the run's deletes."""
        options = self.options
        # Every server, not only this one: the previous run may have been
        # against the other side.
        for url in self._urls or [base_url]:
            self.settle(url)
        need = math.ceil(SHARES["x"] * duration_s * (rate or RATE_CEILING) * 1.25)
        need += 20 * options.threads
        pool = self.pool()
        if len(pool) < need:
            self._serial += 1
            data.django_side(
                self.stack,
                "mix-pool",
                str(need - len(pool)),
                f"{self.run_id}{self._serial}",
            )
            pool = self.pool()
        self.stack.flush_cache()
        self.warm(base_url)
        data_file = write_data_file(
            self.workdir / f"mix-{uuid.uuid4().hex}.txt",
            api=self.stack.api_prefix,
            pages=options.list_pages,
            tokens=tokens,
            detail_ids=self.detail_ids,
            category_ids=self.category_ids,
            pool=pool,
        )
        self._serial += 1
        return run_mix_wrk(
            base_url=base_url,
            data_file=data_file,
            duration_s=duration_s,
            connections=connections,
            rate=rate,
            threads=options.threads,
            run_id=f"{self.run_id}{self._serial}",
            seed=options.seed + self._serial,
            only_creates=only_creates,
        )


def rows(results: list[SideResult], options: MixOptions) -> list[Row]:
    """Return the table rows: each side's steps and hold, then the ratios."""
    table: list[Row] = []
    for result in results:
        suffix = "" if result.side.root == ROOT else f" [{result.side.label}]"
        for index, run in enumerate(result.steps):
            notes = _run_notes(run)
            runs = result.step_runs[index] if result.step_runs else [run]
            if len(runs) > 1:
                rates = "/".join(f"{r.rps:,.0f}" for r in runs)
                notes.insert(0, f"median run of {len(runs)} by rate ({rates} req/s)")
            if index == result.knee_index:
                notes.insert(0, f"KNEE: {result.knee_reason}")
            table.append(
                Row(
                    f"mix step c={run.connections}{suffix}",
                    rate=run.rps,
                    p50_ms=run.p50_ms,
                    p99_ms=run.p99_ms,
                    errors=run.errors,
                    notes=notes,
                )
            )
        hold = result.hold
        if hold is None:
            continue
        wanted = hold.target_rate or 0.0
        notes = [
            f"held {wanted:,.0f} req/s ({options.hold_share:.0%} of the knee's"
            f" {result.knee.rps:,.0f} req/s at c={hold.connections}) for"
            f" {hold.duration_s:.0f} s: achieved {hold.rps / wanted:.0%}"
            if wanted
            else "no rate to hold",
            *_run_notes(hold),
            f"p99 target <= 120 ms: {'met' if hold.p99_ms <= 120 else 'NOT met'}",
            f"errors target 0: {'met' if hold.errors == 0 else 'NOT met'}",
        ]
        if hold.hit_ratio is not None:
            notes.append(
                target(hold.hit_ratio, 0.5, below=False, label="detail hit ratio")
            )
        table.append(
            Row(
                f"mix hold {options.hold_share:.0%} of knee{suffix}",
                rate=hold.rps,
                p50_ms=hold.p50_ms,
                p99_ms=hold.p99_ms,
                errors=hold.errors,
                notes=notes,
            )
        )
    for result in results:
        suffix = "" if result.side.root == ROOT else f" [{result.side.label}]"
        creates, ping = result.creates, result.ping
        if creates is None or ping is None:
            continue
        ratio = creates.rps / ping.rps if ping.rps else None
        notes = [f"ping (/healthz, c=64) on this server {ping.rps:,.0f} req/s"]
        if ratio is not None:
            notes.append(target(ratio, 0.2, below=False, label="creates x ping"))
        table.append(
            Row(
                f"creates alone (JWT) c={creates.connections}{suffix}",
                rate=creates.rps,
                p50_ms=creates.p50_ms,
                p99_ms=creates.p99_ms,
                errors=creates.errors,
                ratio=ratio,
                notes=notes,
            )
        )
    if len(results) == 2 and results[1].hold and results[0].hold:
        here, base = results
        knee_ratio = here.knee.rps / base.knee.rps if base.knee.rps else 0.0
        notes = [
            f"knee {here.knee.rps:,.0f} vs {base.knee.rps:,.0f} req/s:"
            f" {knee_ratio:.2f}x",
            target(knee_ratio, 3, below=False, label="knee x baseline"),
            f"hold p99 {here.hold.p99_ms:,.0f} vs {base.hold.p99_ms:,.0f} ms",
            f"hold rate {here.hold.rps:,.0f} vs {base.hold.rps:,.0f} req/s",
        ]
        table.append(Row(f"mix this checkout / [{base.side.label}]", notes=notes))
    return table


def _run_notes(run: MixRun) -> list[str]:
    notes = [f"p95 {run.p95_ms:,.0f} ms"]
    if run.hit_ratio is not None:
        notes.append(
            f"detail X-Cache HIT {run.hit_ratio:.2f}"
            f" ({run.hits}/{run.hits + run.misses})"
        )
    notes.append(
        "requests " + " ".join(f"{KINDS[k]} {n}" for k, n in run.kinds.items())
    )
    bad = {k: n for k, n in run.bad.items() if n}
    if bad:
        notes.append(
            "4xx/5xx " + " ".join(f"{KINDS.get(k, k)} {n}" for k, n in bad.items())
        )
    if run.socket_errors:
        notes.append(f"socket errors {run.socket_errors}")
    if run.exhausted:
        notes.append(f"pool used up: {run.exhausted} deletes/updates became reads")
    cpu = run.cpu_us_per_request
    if cpu is not None:
        notes.append(f"wrk CPU {cpu:.0f} us/req")
    return notes
