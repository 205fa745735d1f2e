"""What every scenario group shares: the run's state, wrk and probe runs, rows."""

from __future__ import annotations

import statistics
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import data
from bench.client import Client, Response, admin_session_cookie, jwt_access_token
from bench.report import Row, percentile, target
from bench.stack import (
    BENCH_PASSWORD,
    BENCH_STAFF_EMAIL,
    BENCH_USER_EMAIL,
    ServerConfig,
    Stack,
)
from bench.wrk import WrkResult, run_wrk

BULK_SIZE = 1000
# A paired scenario's repeat alternates this many ping and scenario runs.
PAIRED_SEGMENTS = 5


@dataclass
class Options:
    """What to run and how hard."""

    duration: int = 10
    repeat: int = 3
    # Repeats of the scenarios compared with ping run by run (issue 5's
    # ratios): their per-repeat ratios scatter most on a shared machine.
    paired_repeat: int = 5
    connections: int = 64
    admin_connections: int = 4
    probe: int = 20
    bulk_repeat: int = 5
    dashboard_samples: int = 10
    row_sample: int = 2000


class Unavailable(Exception):
    """The endpoint a scenario needs is not there (yet)."""


@dataclass
class Harness:
    """One run: the stores, the server in use, the table, and how to measure."""

    stack: Stack
    options: Options
    log: Callable[[str], None]
    size: data.Size
    sample: data.Sample
    # The server configurations by name; "main" serves the served groups.
    servers: dict[str, ServerConfig]
    rows: list[Row] = field(default_factory=list)
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-paths-"))
    )
    base_url: str = ""
    ping_wrk: float | None = None
    ping_seq: float | None = None
    # Scenarios two groups may ask for, run by whichever asks first.
    done: set[str] = field(default_factory=set)
    # Run after the table is written (e.g. reseeding what a group changed).
    after_report: list[Callable[[], None]] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)
    _admin_cookie: str | None = None

    # --- the server and its sessions ------------------------------------------

    @property
    def api(self) -> str:
        return self.stack.api_prefix

    def use_server(self, base_url: str) -> None:
        """Point the scenarios at a freshly started server."""
        self.base_url = base_url
        self._tokens.clear()
        self._admin_cookie = None

    def client(self, headers: dict[str, str] | None = None) -> Client:
        """Return a keep-alive client of the current server."""
        client = Client(self.base_url)
        client.headers.update(headers or {})
        return client

    def bearer(self, who: str) -> dict[str, str]:
        """Return an Authorization header for the bench's "staff" or "user"."""
        if who not in self._tokens:
            email = BENCH_STAFF_EMAIL if who == "staff" else BENCH_USER_EMAIL
            client = self.client()
            try:
                self._tokens[who] = jwt_access_token(
                    client, self.api, email, BENCH_PASSWORD
                )
            finally:
                client.close()
        return {"Authorization": f"Bearer {self._tokens[who]}"}

    def admin_cookie(self) -> dict[str, str]:
        """Return a Cookie header carrying a staff admin session."""
        if self._admin_cookie is None:
            client = self.client()
            try:
                self._admin_cookie = admin_session_cookie(
                    client, BENCH_STAFF_EMAIL, BENCH_PASSWORD
                )
            finally:
                client.close()
        return {"Cookie": self._admin_cookie}

    def require(self, path: str, headers: dict[str, str] | None = None) -> Response:
        """GET *path* once; raise Unavailable unless it answers 200."""
        client = self.client(headers)
        try:
            response = client.get(path)
        finally:
            client.close()
        if response.status != 200:
            raise Unavailable(f"GET {path} answered {response.status}")
        return response

    # --- the table --------------------------------------------------------------

    def add(self, row: Row) -> Row:
        """Record *row* and echo it to the log."""
        self.rows.append(row)
        rate = f"{row.rate:,.1f} {row.unit}" if row.rate is not None else "-"
        self.log(f"  {row.scenario}: {rate}; {'; '.join(row.notes)}")
        return row

    def skip(self, scenario: str, reason: str) -> None:
        """Record a scenario that could not run, with the reason."""
        self.add(Row(scenario, notes=[f"not run: {reason}"]))

    def paths_file(self, paths: list[str]) -> Path:
        """Write *paths* for bench/lua/paths.lua; return the file."""
        path = self.workdir / f"{uuid.uuid4().hex}.txt"
        path.write_text("\n".join(paths) + "\n")
        return path

    def signed_in(self, who: str, path: str, scenario: str) -> dict[str, str] | None:
        """Return *who*'s bearer header if *path* answers it; else skip *scenario*."""
        try:
            headers = self.bearer(who)
            self.require(path, headers)
        except (Unavailable, RuntimeError) as exc:
            self.skip(scenario, str(exc))
            return None
        return headers

    # --- measuring ----------------------------------------------------------------

    def get_each(
        self,
        paths: list[str],
        headers: dict[str, str] | None = None,
        *,
        flush_each: bool = False,
        warm: bool = False,
    ) -> list[Response]:
        """GET *paths* one after another on one connection (*warm*: one GET first)."""
        client = self.client(headers)
        responses = []
        try:
            if warm:
                client.get(paths[0])
            for path in paths:
                if flush_each:
                    self.stack.flush_cache()
                responses.append(client.get(path))
        finally:
            client.close()
        return responses

    def probe(
        self,
        paths: list[str],
        headers: dict[str, str] | None = None,
        *,
        flush_each: bool = False,
    ) -> tuple[float | None, Counter, list[Response]]:
        """GET *paths* in turn; return server p50 ms, X-Cache tally, answers."""
        responses = self.get_each(paths, headers, flush_each=flush_each)
        servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
        tally = Counter(r.headers.get("x-cache", "none") for r in responses)
        return (statistics.median(servers) if servers else None), tally, responses

    def wrk(
        self,
        paths_file: Path,
        duration_s: int,
        headers: dict[str, str] | None = None,
        connections: int | None = None,
        base_url: str | None = None,
    ) -> WrkResult:
        """Run wrk once over *paths_file* against the current server (or *base_url*)."""
        return run_wrk(
            base_url=base_url or self.base_url,
            paths_file=paths_file,
            duration_s=duration_s,
            connections=connections or self.options.connections,
            headers=headers,
        )

    def load(
        self,
        scenario: str,
        paths: list[str],
        *,
        headers: dict[str, str] | None = None,
        connections: int | None = None,
        cache: str | None = None,
        notes: list[str] | None = None,
        paired: bool = False,
    ) -> Row:
        """Drive *paths* with wrk (repeated, medians) after a sequential probe.

        cache="HIT": every path is requested once first, so wrk only sees hits.
        cache="MISS": the Redis database is flushed before the probe and before
        every repeat, and each path appears once, so no request finds its key.
        paired: each repeat alternates short ping and scenario runs
        (PAIRED_SEGMENTS of each), and the ratio is the median of the
        per-repeat ratios, so a machine whose speed drifts during the run (a
        shared VM) moves both sides alike.
        """
        if paired and cache == "MISS":
            # Each short run would start over at the first path: keys repeat.
            raise ValueError("paired runs need cache='HIT' or no cache")
        notes = list(notes or [])
        wrk_paths, server_ms = self._prepare(paths, headers, cache, notes)
        paths_file = self.paths_file(wrk_paths)
        if paired:
            results, pings = self._paired_runs(paths_file, headers, connections)
        else:
            results, pings = self._runs(paths_file, headers, connections, cache), []
        rps = statistics.median(r.rps for r in results)
        if cache == "MISS" and max(r.requests for r in results) > len(wrk_paths):
            notes.append("keys wrapped: some requests may have hit")
        ratio = rps / self.ping_wrk if self.ping_wrk else None
        if pings:
            ratios = [r.rps / p.rps for r, p in zip(results, pings, strict=True)]
            ratio = statistics.median(ratios)
            notes.append(
                "x ping paired: median of "
                + " / ".join(f"{x:.2f}" for x in ratios)
                + f" (ping {statistics.median(p.rps for p in pings):,.0f} req/s)"
            )
        row = wrk_row(scenario, results, ratio=ratio, server_ms=server_ms)
        row.notes = notes
        return self.add(row)

    def _prepare(
        self,
        paths: list[str],
        headers: dict[str, str] | None,
        cache: str | None,
        notes: list[str],
    ) -> tuple[list[str], float | None]:
        """Warm or flush the cache as *cache* says, probe; return wrk's paths, ms."""
        probe = self.options.probe
        # Cycle short path lists so the probe always has options.probe requests.
        probe_paths = (paths * probe)[:probe]
        wrk_paths = paths
        if cache == "MISS":
            # Probe with paths wrk will not use, so the probe warms nothing.
            probe_paths = paths[-probe:]
            wrk_paths = paths[:-probe] or paths
            self.stack.flush_cache()
        elif cache == "HIT":
            self.probe(sorted(set(paths))[:2000], headers)
        else:
            self.probe(paths[:3], headers)
        server_ms, tally, responses = self.probe(probe_paths, headers)
        bad = [r for r in responses if r.status >= 400]
        if bad:
            notes.append(f"probe: {len(bad)} answers {bad[0].status}")
        if cache is not None:
            notes.append(x_cache_note(tally))
        return wrk_paths, server_ms

    def _runs(
        self,
        paths_file: Path,
        headers: dict[str, str] | None,
        connections: int | None,
        cache: str | None,
    ) -> list[WrkResult]:
        """Run wrk options.repeat times (on a flushed cache for "MISS")."""
        results = []
        for _ in range(self.options.repeat):
            if cache == "MISS":
                self.stack.flush_cache()
            results.append(
                self.wrk(paths_file, self.options.duration, headers, connections)
            )
        return results

    def _paired_runs(
        self,
        paths_file: Path,
        headers: dict[str, str] | None,
        connections: int | None,
    ) -> tuple[list[WrkResult], list[WrkResult]]:
        """Return per-repeat scenario and ping results from alternating short runs.

        Each side goes first in turn, so that both see the same machine even
        when its speed drifts.
        """
        ping_file = self.paths_file(["/healthz"])
        segment = max(1, self.options.duration // PAIRED_SEGMENTS)
        results, pings = [], []
        for _ in range(self.options.paired_repeat):
            ping_parts: list[WrkResult] = []
            parts: list[WrkResult] = []
            sides = [
                (ping_parts, ping_file, None, None),
                (parts, paths_file, headers, connections),
            ]
            for i in range(PAIRED_SEGMENTS):
                for sink, file, side_headers, side_conns in (
                    sides if i % 2 == 0 else sides[::-1]
                ):
                    sink.append(self.wrk(file, segment, side_headers, side_conns))
            pings.append(merged(ping_parts))
            results.append(merged(parts))
        return results, pings

    def sequential(
        self,
        scenario: str,
        paths: list[str],
        *,
        headers: dict[str, str] | None = None,
        flush_each: bool = False,
        notes: list[str] | None = None,
    ) -> Row:
        """GET *paths* one after another on one connection (the "1 conn" mode)."""
        notes = list(notes or [])
        responses = self.get_each(paths, headers, flush_each=flush_each, warm=True)
        wall = sum(r.wall_s for r in responses)
        walls = [r.wall_s * 1000 for r in responses]
        servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
        rate = len(responses) / wall if wall else None
        tally = Counter(r.headers.get("x-cache", "none") for r in responses)
        if any(k != "none" for k in tally):
            notes.append(x_cache_note(tally))
        return self.add(
            Row(
                scenario,
                rate=rate,
                p50_ms=statistics.median(walls),
                p99_ms=percentile(walls, 99),
                errors=sum(1 for r in responses if r.status >= 400),
                ratio=rate / self.ping_seq if rate and self.ping_seq else None,
                server_ms=statistics.median(servers) if servers else None,
                notes=notes,
            )
        )


def x_cache_note(tally: Counter) -> str:
    """Return the note counting X-Cache answers (e.g. "X-Cache HIT 20/20")."""
    total = sum(tally.values())
    return "X-Cache " + ", ".join(f"{k} {v}/{total}" for k, v in tally.items())


def merged(parts: list[WrkResult]) -> WrkResult:
    """Return consecutive wrk runs as one (p50: median of the parts; p99: worst)."""
    return WrkResult(
        requests=sum(p.requests for p in parts),
        duration_s=sum(p.duration_s for p in parts),
        p50_ms=statistics.median(p.p50_ms for p in parts),
        p99_ms=max(p.p99_ms for p in parts),
        errors=sum(p.errors for p in parts),
        non_2xx=sum(p.non_2xx for p in parts),
    )


def wrk_row(
    scenario: str,
    results: list[WrkResult],
    *,
    ratio: float | None,
    server_ms: float | None = None,
) -> Row:
    """Return the row of repeated wrk runs: median rate and latencies, all errors."""
    return Row(
        scenario,
        rate=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        ratio=ratio,
        server_ms=server_ms,
    )


def bulk_row(
    scenario: str, responses: list[Response], *, ok: int, limit_ms: float
) -> Row:
    """Return the row of BULK_SIZE-item requests: rows/s from the median server ms."""
    servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
    walls = [r.wall_s * 1000 for r in responses]
    server_ms = statistics.median(servers) if servers else None
    errors = [r for r in responses if r.status != ok]
    notes = [f"median of {len(responses)}"]
    if errors:
        notes.append(error_note(errors[0]))
    if server_ms is not None:
        notes.append(target(server_ms, limit_ms, below=True, label="server ms"))
    return Row(
        scenario,
        rate=BULK_SIZE / (server_ms / 1000) if server_ms else None,
        unit="rows/s",
        p50_ms=statistics.median(walls) if walls else None,
        p99_ms=percentile(walls, 99) if walls else None,
        errors=len(errors),
        server_ms=server_ms,
        notes=notes,
    )


def error_note(response: Response) -> str:
    """Return a note with *response*'s status and the start of its body."""
    return f"{response.status}: {response.body[:120].decode(errors='replace')}"
