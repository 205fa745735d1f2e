"""The scenarios: each appends rows to the run's one table."""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import data
from bench.client import Client, Response, admin_session_cookie, jwt_access_token
from bench.report import Row
from bench.stack import (
    BENCH_EMAIL_DOMAIN,
    BENCH_PASSWORD,
    BENCH_STAFF_EMAIL,
    BENCH_USER_EMAIL,
    RESULTS_DIR,
    ROOT,
    ServerConfig,
    Stack,
    server,
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


def target(value: float, limit: float, *, below: bool, label: str) -> str:
    """Return a note saying whether *value* meets the target."""
    met = value < limit if below else value >= limit
    sign = "<" if below else ">="
    return f"{label} target {sign} {limit:g}: {'met' if met else 'NOT met'}"


class Runner:
    """Runs scenarios against one server at a time and collects the table."""

    def __init__(self, stack: Stack, options: Options, log: Callable[[str], None]):
        self.stack = stack
        self.options = options
        self.log = log
        self.rows: list[Row] = []
        self.context: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-paths-"))
        self.base_url = ""
        self.ping_wrk: float | None = None
        self.ping_seq: float | None = None
        self.sample: data.Sample | None = None
        self._tokens: dict[str, str] = {}
        self._admin_cookie: str | None = None
        self._single_list_done = False
        self.reseed_needed = False

    # --- plumbing -----------------------------------------------------------

    @property
    def api(self) -> str:
        return self.stack.api_prefix

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

    def use_server(self, base_url: str) -> None:
        """Point the scenarios at a freshly started server."""
        self.base_url = base_url
        self._tokens.clear()
        self._admin_cookie = None

    def add(self, row: Row) -> Row:
        """Record *row* and echo it to the log."""
        self.rows.append(row)
        rate = f"{row.rate:,.1f} {row.unit}" if row.rate is not None else "-"
        self.log(f"  {row.scenario}: {rate}; {'; '.join(row.notes)}")
        return row

    def skip(self, scenario: str, reason: str) -> None:
        """Record a scenario that could not run, with the reason."""
        self.add(Row(scenario, notes=[f"not run: {reason}"]))

    def _paths_file(self, paths: list[str]) -> Path:
        path = self.workdir / f"{uuid.uuid4().hex}.txt"
        path.write_text("\n".join(paths) + "\n")
        return path

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

    # --- measuring ------------------------------------------------------------

    def probe(
        self,
        paths: list[str],
        headers: dict[str, str] | None = None,
        *,
        flush_each: bool = False,
    ) -> tuple[float | None, Counter, list[Response]]:
        """GET *paths* in turn; return server p50 ms, X-Cache tally, answers."""
        client = self.client(headers)
        responses = []
        try:
            for path in paths:
                if flush_each:
                    self.stack.flush_cache()
                responses.append(client.get(path))
        finally:
            client.close()
        servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
        tally = Counter(r.headers.get("x-cache", "none") for r in responses)
        return (statistics.median(servers) if servers else None), tally, responses

    def load(
        self,
        scenario: str,
        paths: list[str],
        *,
        headers: dict[str, str] | None = None,
        connections: int | None = None,
        cache: str | None = None,
        notes: list[str] | None = None,
        ping: float | None = None,
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
        options = self.options
        if paired and cache == "MISS":
            # Each short run would start over at the first path: keys repeat.
            raise ValueError("paired runs need cache='HIT' or no cache")
        notes = list(notes or [])
        # Cycle short path lists so the probe always has options.probe requests.
        probe_paths = (paths * options.probe)[: options.probe]
        wrk_paths = paths
        if cache == "MISS":
            # Probe with paths wrk will not use, so the probe warms nothing.
            probe_paths = paths[-options.probe :]
            wrk_paths = paths[: -options.probe] or paths
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
            notes.append(
                "X-Cache "
                + ", ".join(f"{k} {v}/{len(responses)}" for k, v in tally.items())
            )
        paths_file = self._paths_file(wrk_paths)
        ping_file = self._paths_file(["/healthz"]) if paired else None
        results, pings = [], []
        for _ in range(options.paired_repeat if paired else options.repeat):
            if cache == "MISS":
                self.stack.flush_cache()
            if ping_file is None:
                results.append(
                    self._wrk(paths_file, options.duration, headers, connections)
                )
                continue
            # Alternate short ping and scenario runs (each side first in turn),
            # so that both see the same machine even when its speed drifts.
            segment = max(1, options.duration // PAIRED_SEGMENTS)
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
                    sink.append(self._wrk(file, segment, side_headers, side_conns))
            pings.append(_merged(ping_parts))
            results.append(_merged(parts))
        rps = statistics.median(r.rps for r in results)
        if cache == "MISS" and max(r.requests for r in results) > len(wrk_paths):
            notes.append("keys wrapped: some requests may have hit")
        reference = ping if ping is not None else self.ping_wrk
        ratio = rps / reference if reference else None
        if pings:
            ratios = [r.rps / p.rps for r, p in zip(results, pings, strict=True)]
            ratio = statistics.median(ratios)
            notes.append(
                "x ping paired: median of "
                + " / ".join(f"{x:.2f}" for x in ratios)
                + f" (ping {statistics.median(p.rps for p in pings):,.0f} req/s)"
            )
        return self.add(
            Row(
                scenario,
                rate=rps,
                p50_ms=statistics.median(r.p50_ms for r in results),
                p99_ms=statistics.median(r.p99_ms for r in results),
                errors=sum(r.errors for r in results),
                ratio=ratio,
                server_ms=server_ms,
                notes=notes,
            )
        )

    def _wrk(
        self,
        paths_file: Path,
        duration_s: int,
        headers: dict[str, str] | None,
        connections: int | None,
    ) -> WrkResult:
        return run_wrk(
            base_url=self.base_url,
            paths_file=paths_file,
            duration_s=duration_s,
            connections=connections or self.options.connections,
            headers=headers,
        )

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
        client = self.client(headers)
        responses = []
        wall = 0.0
        try:
            client.get(paths[0])
            for path in paths:
                if flush_each:
                    self.stack.flush_cache()
                response = client.get(path)
                wall += response.wall_s
                responses.append(response)
        finally:
            client.close()
        walls = [r.wall_s * 1000 for r in responses]
        servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
        rate = len(responses) / wall if wall else None
        tally = Counter(r.headers.get("x-cache", "none") for r in responses)
        if any(k != "none" for k in tally):
            notes.append(
                "X-Cache "
                + ", ".join(f"{k} {v}/{len(responses)}" for k, v in tally.items())
            )
        return self.add(
            Row(
                scenario,
                rate=rate,
                p50_ms=statistics.median(walls),
                p99_ms=_p99(walls),
                errors=sum(1 for r in responses if r.status >= 400),
                ratio=rate / self.ping_seq if rate and self.ping_seq else None,
                server_ms=statistics.median(servers) if servers else None,
                notes=notes,
            )
        )

    # --- groups -----------------------------------------------------------------

    def ping(self) -> None:
        """Measure /healthz (no I/O): the reference every ratio is taken against."""
        row = self.load("ping (/healthz)", ["/healthz"], notes=["wrk reference"])
        self.ping_wrk = row.rate
        row.ratio = 1.0
        seq = self.sequential(
            "ping (/healthz, 1 conn)", ["/healthz"] * 300, notes=["1-conn reference"]
        )
        self.ping_seq = seq.rate
        seq.ratio = 1.0

    def ping_again(self) -> None:
        """Measure ping once more: its ratio to the first shows the run's drift."""
        row = self.load("ping again (drift check)", ["/healthz"])
        row.notes.append("x ping near 1.00 means a steady machine")

    def admin(self) -> None:
        """Time the product changelist, both searches and the change form as staff."""
        sample = self.sample
        assert sample is not None
        cookie = self.admin_cookie()
        base = "/admin/catalog/product/"
        prefixes = [_name_prefix(name) for name in sample.names[:500]]
        cases = [
            ("admin product changelist", [base]),
            (
                "admin search by sku",
                [f"{base}?q={urllib.parse.quote(sku)}" for sku in sample.skus[:500]],
            ),
            (
                "admin search by name prefix",
                [f"{base}?q={urllib.parse.quote(p)}" for p in prefixes if p],
            ),
            (
                "admin product change form",
                [f"{base}{pk}/change/" for pk in sample.product_ids[:500]],
            ),
        ]
        for scenario, paths in cases:
            row = self.load(
                scenario,
                paths,
                headers=cookie,
                connections=self.options.admin_connections,
                notes=[f"staff session, wrk -c{self.options.admin_connections}"],
            )
            if row.server_ms is not None:
                row.notes.append(
                    target(row.server_ms, 500, below=True, label="server ms")
                )

    def cache(self) -> None:
        """Compare cached and uncached reads (issue 5), each as a ratio to ping."""
        sample = self.sample
        assert sample is not None
        api = self.api
        detail = [f"{api}/products/{pk}/" for pk in sample.product_ids]
        category = sample.category_ids[0]
        list_path = f"{api}/products/?category={category}&limit=20"
        try:
            self.require(detail[0])
            cached = self.load(
                "product detail cached", detail[:1], cache="HIT", paired=True
            )
            uncached = self.load(
                "product detail uncached",
                detail,
                cache="MISS",
                notes=["a distinct id per request, Redis flushed before each repeat"],
            )
            _cache_targets(cached, uncached)
        except Unavailable as exc:
            self.skip("product detail", str(exc))
        try:
            self.require(list_path)
            cached = self.load(
                "product list cached (20, category filter)",
                [list_path],
                cache="HIT",
                paired=True,
            )
            _cache_targets(cached, self.product_list_uncached())
        except Unavailable as exc:
            self.skip("product list", str(exc))
        if sample.user_ids:
            path = f"{api}/users/{sample.user_ids[0]}/"
            try:
                headers = self.bearer("user")
                self.require(path, headers)
                cached = self.load(
                    "user detail cached (JWT)",
                    [path],
                    headers=headers,
                    cache="HIT",
                    notes=["signed-in user reading another user"],
                    paired=True,
                )
                _cache_targets(cached, None)
            except (Unavailable, RuntimeError) as exc:
                self.skip("user detail cached", str(exc))
        self.dashboard()

    def product_list_uncached(self) -> Row | None:
        """Measure list reads whose cache key differs per request (verified)."""
        if self._single_list_done:
            return None
        self._single_list_done = True
        sample = self.sample
        assert sample is not None
        api = self.api
        categories = sample.category_ids
        # A query parameter the filters ignore but the cache key includes (the
        # key covers the normalised query string): verified below with X-Cache.
        paths = [
            f"{api}/products/?category={categories[i % len(categories)]}"
            f"&limit=20&nocache={i}"
            for i in range(40_000)
        ]
        self.stack.flush_cache()
        _, tally, _ = self.probe([paths[0], paths[0], paths[1]])
        misses_distinct = tally.get("HIT", 0) == 1 and tally.get("MISS", 0) == 2
        scenario = "product list uncached (20, category filter)"
        if misses_distinct or "none" in tally:
            notes = [
                "distinct query string per request, Redis flushed before each repeat"
            ]
            row = self.load(scenario, paths, cache="MISS", notes=notes)
        else:
            notes = ["Redis flushed before each request (one connection)"]
            row = self.sequential(
                scenario + " 1 conn", paths[:50], flush_each=True, notes=notes
            )
        # The issue 4 target is about the server time of a lone request: keys
        # no earlier request used, on a flushed cache.
        self.stack.flush_cache()
        server_ms, lone_tally, _ = self.probe(
            [
                f"{api}/products/?category={categories[i % len(categories)]}"
                f"&limit=20&nocache=lone-{i}"
                for i in range(50)
            ],
            flush_each=not misses_distinct,
        )
        if server_ms is not None:
            row.server_ms = server_ms
            misses = lone_tally.get("MISS", 0)
            row.notes.append(
                target(
                    server_ms,
                    30,
                    below=True,
                    label=f"server ms (50 lone, {misses} MISS)",
                )
            )
        return row

    def dashboard(self) -> None:
        """Dashboard cached under load, and uncached one request at a time."""
        path = f"{self.api}/analytics/dashboard/"
        try:
            headers = self.bearer("staff")
            self.require(path, headers)
        except (Unavailable, RuntimeError) as exc:
            self.skip("dashboard", str(exc))
            return
        cached = self.load(
            "dashboard cached (staff JWT)",
            [path],
            headers=headers,
            cache="HIT",
            paired=True,
        )
        row = self.sequential(
            "dashboard uncached (staff JWT, 1 conn)",
            [path] * self.options.dashboard_samples,
            headers=headers,
            flush_each=True,
            notes=["Redis flushed before each request"],
        )
        if row.server_ms is not None:
            row.notes.append(target(row.server_ms, 1000, below=True, label="server ms"))
        _cache_targets(cached, None)
        if cached.server_ms and row.server_ms:
            # The uncached dashboard runs one request at a time, so compare
            # the server's own time rather than rates of different modes.
            speedup = row.server_ms / cached.server_ms
            cached.notes.append(f"{speedup:.0f}x faster than uncached (server ms)")
            cached.notes.append(target(speedup, 3, below=False, label="x uncached"))

    def mixed(self) -> None:
        """A signed-in client's mix of list, detail, profile and category reads."""
        sample = self.sample
        assert sample is not None
        api = self.api
        try:
            headers = self.bearer("user")
            self.require(f"{api}/users/me/", headers)
        except (Unavailable, RuntimeError) as exc:
            self.skip("mixed reads", str(exc))
            return
        paths = []
        categories = sample.category_ids
        for i in range(4000):
            kind = i % 10
            if kind < 4:
                paths.append(
                    f"{api}/products/?category={categories[i % len(categories)]}"
                    f"&limit=20&offset={20 * (i % 5)}"
                )
            elif kind < 8:
                paths.append(f"{api}/products/{sample.product_ids[i % 2000]}/")
            elif kind == 8:
                paths.append(f"{api}/users/me/")
            else:
                paths.append(f"{api}/categories/")
        self.load(
            "mixed reads (JWT, warm cache)",
            paths,
            headers=headers,
            notes=[
                "40% list, 40% detail of 2,000 products, 10% /users/me/, 10% categories"
            ],
        )

    def users_bulk(self) -> None:
        """POST /users/bulk/ with 1,000 users without passwords (issue 3)."""
        path = f"{self.api}/users/bulk/"
        scenario = f"users bulk create {BULK_SIZE:,} (no passwords)"
        try:
            headers = self.bearer("staff")
        except RuntimeError as exc:
            self.skip(scenario, str(exc))
            return
        client = self.client(headers)
        responses = []
        run = uuid.uuid4().hex[:8]
        try:
            for rep in range(self.options.bulk_repeat):
                body = [
                    {
                        "email": f"bulk-{run}-{rep}-{i}@{BENCH_EMAIL_DOMAIN}",
                        "username": f"bulk-{run}-{rep}-{i}",
                    }
                    for i in range(BULK_SIZE)
                ]
                response = client.request("POST", path, json_body=body)
                if response.status == 404:
                    self.skip(scenario, "POST /users/bulk/ answered 404")
                    return
                responses.append(response)
        finally:
            client.close()
            data.remove_leftovers(self.stack)
            self.stack.flush_cache()
        self.add(_bulk_row(scenario, responses, ok=201, limit_ms=200))

    def products_bulk(self) -> None:
        """Bulk create/update/delete of 1,000 versus 1,000 single requests (issue 4)."""
        sample = self.sample
        assert sample is not None
        api = self.api
        bulk = f"{api}/products/bulk/"
        try:
            headers = self.bearer("staff")
        except RuntimeError as exc:
            self.skip("products bulk", str(exc))
            return
        client = self.client(headers)
        categories = sample.category_ids
        run = uuid.uuid4().hex[:8].upper()
        phases: dict[str, list[Response]] = {"create": [], "update": [], "delete": []}
        singles: dict[str, list[Response]] = {"create": [], "update": [], "delete": []}
        try:
            for rep in range(self.options.bulk_repeat):
                items = [
                    {
                        "sku": f"BENCH-{run}-{rep}-{i:04d}",
                        "name": f"Bench product {i}",
                        "description": "Made by the benchmark harness.",
                        "price": f"{10 + i % 90}.{i % 100:02d}",
                        "stock": i % 50,
                        "category": categories[i % len(categories)],
                    }
                    for i in range(BULK_SIZE)
                ]
                created = client.request("POST", bulk, json_body=items)
                if created.status == 404:
                    self.skip("products bulk", "POST /products/bulk/ answered 404")
                    return
                phases["create"].append(created)
                if created.status != 201:
                    raise RuntimeError(
                        f"bulk create: {created.status} {created.body[:300]!r}"
                    )
                ids = created.json()["ids"]  # type: ignore[index]
                changes = [
                    {"id": pk, "price": f"{20 + i % 50}.50", "stock": 7 + i % 13}
                    for i, pk in enumerate(ids)
                ]
                phases["update"].append(
                    client.request("PATCH", bulk, json_body=changes)
                )
                phases["delete"].append(
                    client.request("DELETE", bulk, json_body={"ids": ids})
                )
            ids = []
            for i in range(BULK_SIZE):
                item = {
                    "sku": f"BENCH-{run}-S-{i:04d}",
                    "name": f"Bench single {i}",
                    "description": "Made by the benchmark harness.",
                    "price": "12.34",
                    "stock": 5,
                    "category": categories[i % len(categories)],
                }
                response = client.request("POST", f"{api}/products/", json_body=item)
                singles["create"].append(response)
                if response.status == 201:
                    ids.append(response.json()["id"])  # type: ignore[index]
            for pk in ids:
                singles["update"].append(
                    client.request(
                        "PATCH", f"{api}/products/{pk}/", json_body={"price": "13.50"}
                    )
                )
            for pk in ids:
                singles["delete"].append(
                    client.request("DELETE", f"{api}/products/{pk}/")
                )
        finally:
            client.close()
            data.remove_leftovers(self.stack)
            self.stack.flush_cache()
        limits = {"create": 180, "update": 145, "delete": 125}
        ok = {"create": 201, "update": 200, "delete": 200}
        single_ok = {"create": 201, "update": 200, "delete": 204}
        for phase in ("create", "update", "delete"):
            row = _bulk_row(
                f"products bulk {phase} {BULK_SIZE:,}",
                phases[phase],
                ok=ok[phase],
                limit_ms=limits[phase],
            )
            single_row = _single_row(
                f"products single {phase} x{BULK_SIZE:,}",
                singles[phase],
                single_ok[phase],
            )
            single_total = sum(r.server_s or 0 for r in singles[phase]) * 1000
            if row.server_ms and single_total:
                speedup = single_total / row.server_ms
                row.notes.append(f"{speedup:.1f}x the single requests' server time")
                row.notes.append(target(speedup, 20, below=False, label="speed-up"))
            self.add(row)
            self.add(single_row)

    def serving(self, configs: list[ServerConfig]) -> None:
        """Compare server models on keep-alive ping and authenticated uncached detail.

        All servers run side by side and the wrk runs alternate between them
        (each repeat starts with a different server), so drift in the
        machine's load hits every model alike. The first configuration is
        the reference (today's sync gunicorn); each row gives its ratio to it,
        from the same run. wrk keeps its connections alive: a server that
        closes them pays for a new connection per request.
        """
        sample = self.sample
        assert sample is not None
        options = self.options
        detail = [f"{self.api}/products/{pk}/" for pk in sample.product_ids]
        probe_paths, wrk_paths = detail[-options.probe :], detail[: -options.probe]
        ping_file = self._paths_file(["/healthz"])
        detail_file = self._paths_file(wrk_paths)
        kinds = ("ping", "detail")
        # The constant answer of the raw server has no product detail.
        measured = {
            c.label: kinds[:1] if c.worker_class == "raw" else kinds for c in configs
        }
        with ExitStack() as servers:
            urls = {
                c.label: servers.enter_context(server(self.stack, c)) for c in configs
            }
            headers: dict[str, str] = {}
            server_ms: dict[str, float | None] = {}
            for label, url in urls.items():
                if "detail" not in measured[label]:
                    continue
                self.use_server(url)
                headers = headers or self.bearer("user")
                self.require(detail[0], headers)
                self.stack.flush_cache()
                server_ms[label], _, _ = self.probe(probe_paths, headers)
            runs: dict[str, dict[str, list[WrkResult]]] = {
                label: {kind: [] for kind in measured[label]} for label in urls
            }
            order = list(urls)
            for repeat in range(options.repeat):
                shift = repeat % len(order)
                for label in order[shift:] + order[:shift]:
                    for kind, paths_file in zip(
                        measured[label], (ping_file, detail_file), strict=False
                    ):
                        self.stack.flush_cache()
                        runs[label][kind].append(
                            run_wrk(
                                base_url=urls[label],
                                paths_file=paths_file,
                                duration_s=options.duration,
                                connections=options.connections,
                                headers=headers if kind == "detail" else None,
                            )
                        )
        reference: dict[str, float] = {}
        for label, results_by_kind in runs.items():
            ping_rps = statistics.median(r.rps for r in results_by_kind["ping"])
            for kind, name in (
                ("ping", f"ping keep-alive [{label}]"),
                ("detail", f"product detail uncached, authenticated [{label}]"),
            ):
                if kind not in results_by_kind:
                    continue
                results = results_by_kind[kind]
                rps = statistics.median(r.rps for r in results)
                notes = [
                    f"median of {len(results)}: "
                    + " / ".join(f"{r.rps:,.0f}" for r in results)
                ]
                if kind == "detail":
                    notes.append("x ping: this server's ping")
                    if max(r.requests for r in results) > len(wrk_paths):
                        notes.append("keys wrapped: some requests may have hit")
                if kind in reference:
                    ratio = rps / reference[kind]
                    notes.append(f"{ratio:.2f}x {configs[0].label}")
                    if kind == "ping" and measured[label] == kinds:
                        notes.append(target(ratio, 2, below=False, label="x today"))
                else:
                    reference[kind] = rps
                self.add(
                    Row(
                        name,
                        rate=rps,
                        p50_ms=statistics.median(r.p50_ms for r in results),
                        p99_ms=statistics.median(r.p99_ms for r in results),
                        errors=sum(r.errors for r in results),
                        ratio=rps / ping_rps if kind == "detail" else 1.0,
                        server_ms=server_ms[label] if kind == "detail" else None,
                        notes=notes,
                    )
                )

    def imports(self, size: data.Size) -> None:
        """Time import_products (create, then update) against COPY and row-by-row."""
        stack = self.stack
        csv_path = RESULTS_DIR / f"products-{size.products}.csv"
        started = time.perf_counter()
        completed = stack.manage("export_products", "--output", str(csv_path))
        del completed
        export_s = time.perf_counter() - started
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle))
        rows = size.products
        self.add(
            Row(
                f"export_products {rows:,} rows (CSV)",
                rate=rows / export_s,
                unit="rows/s",
                notes=[f"{export_s:.1f} s, {csv_path.stat().st_size / 1e6:,.0f} MB"],
            )
        )
        plain_rate = self._copy_plain(csv_path, header)
        self.add(
            Row(
                "COPY of the same file into a plain table",
                rate=plain_rate,
                unit="rows/s",
                notes=["psycopg COPY FROM STDIN; typed columns, no index"],
            )
        )
        copy_rate = self._copy_indexed(csv_path, header, gin=False)
        self.add(
            Row(
                "COPY of the same file into a B-tree-indexed twin",
                rate=copy_rate,
                unit="rows/s",
                notes=[
                    "a table LIKE catalog_product INCLUDING INDEXES, GIN ones"
                    " dropped (pk, unique sku, filter/order B-trees)"
                ],
            )
        )
        gin_rate = self._copy_indexed(csv_path, header, gin=True)
        self.add(
            Row(
                "COPY of the same file into a fully indexed twin",
                rate=gin_rate,
                unit="rows/s",
                notes=[
                    "as above plus the trigram and full-text GIN indexes: the"
                    " same indexes the import leaves, so the x COPY target uses it"
                ],
            )
        )
        self.reseed_needed = True
        _truncate_products(stack)
        one = data.django_side(
            stack, "row-by-row", str(csv_path), str(self.options.row_sample)
        )
        row_rate = one["rows"] / one["seconds"]
        self.add(
            Row(
                "Product.save() one row at a time, empty catalog",
                rate=row_rate,
                unit="rows/s",
                notes=[
                    f"first {one['rows']:,} rows of the file, one autocommit save()"
                    " each, into an empty catalog (small indexes: its fastest"
                    " case); rate extrapolated"
                ],
            )
        )
        _truncate_products(stack)
        labels = {"create": "create, empty catalog", "update": "update, same file"}
        save_rate = row_rate
        for phase in ("create", "update"):
            seconds, peak_mb, summary = _timed_import(stack, csv_path)
            rate = rows / seconds
            if phase == "create":
                # save() slows down as the indexes grow: time it again at the
                # end of the load, and extrapolate the whole load from the mean
                # of the per-row times at its start and its end.
                full = data.django_side(
                    stack,
                    "row-by-row",
                    str(csv_path),
                    str(self.options.row_sample),
                    "--tail",
                )
                full_rate = full["rows"] / full["seconds"]
                save_rate = 2 / (1 / row_rate + 1 / full_rate)
            notes = [
                f"{seconds:.1f} s wall",
                f"peak RSS {peak_mb:,.0f} MB",
                target(peak_mb, 300, below=True, label="memory MB"),
                f"{rate / gin_rate:.2f}x COPY into the fully indexed twin",
                f"{rate / copy_rate:.2f}x B-tree-indexed COPY",
                f"{rate / plain_rate:.2f}x plain COPY",
                f"{rate / save_rate:.0f}x save() per row over the load"
                f" ({rate / row_rate:.0f}x its empty-catalog rate)",
            ]
            if phase == "create":
                notes += [
                    target(rate / gin_rate, 0.4, below=False, label="x COPY"),
                    target(rate / save_rate, 20, below=False, label="x save()"),
                ]
            if summary:
                notes.append(summary)
            self.add(
                Row(
                    f"import_products {rows:,} rows ({labels[phase]})",
                    rate=rate,
                    unit="rows/s",
                    notes=notes,
                )
            )
            if phase == "create":
                self.add(
                    Row(
                        "Product.save() one row at a time, full catalog",
                        rate=full_rate,
                        unit="rows/s",
                        notes=[
                            f"last {full['rows']:,} rows of the file deleted, then"
                            " saved one by one into the loaded catalog; rate"
                            " extrapolated"
                        ],
                    )
                )
                self.add(
                    Row(
                        "Product.save() one row at a time, whole load (estimate)",
                        rate=save_rate,
                        unit="rows/s",
                        notes=[
                            "from the mean per-row time of the empty-catalog and"
                            " full-catalog samples: the x save() target uses it"
                        ],
                    )
                )

    def restore(self, size: data.Size) -> None:
        """Put the seeded catalog back after an import (new ids, today's dates)."""
        if self.reseed_needed:
            _truncate_products(self.stack)
            data.seed(self.stack, size)
            self.stack.flush_cache()
            self.reseed_needed = False

    def _copy_plain(self, csv_path: Path, header: list[str]) -> float:
        """Return COPY's rows/s for *csv_path* into a typed table without indexes."""
        types = {
            "id": "bigint",
            "price": "numeric(12,2)",
            "stock": "integer",
            "is_active": "boolean",
            "created_at": "timestamptz",
            "updated_at": "timestamptz",
        }
        columns = ", ".join(f'"{name}" {types.get(name, "text")}' for name in header)
        with self.stack.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS bench_copy_plain")
            conn.execute(f"CREATE TABLE bench_copy_plain ({columns})")
            try:
                return _copy_file(conn, "bench_copy_plain", header, csv_path)
            finally:
                conn.execute("DROP TABLE bench_copy_plain")

    def _copy_indexed(
        self, csv_path: Path, header: list[str], *, gin: bool = True
    ) -> float:
        """Return COPY's rows/s for *csv_path* into a twin of catalog_product.

        The twin has every index of catalog_product, or without *gin* only its
        B-tree ones (primary key, unique SKU, filters and orderings).
        """
        with self.stack.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS bench_copy_indexed")
            conn.execute("DROP SEQUENCE IF EXISTS bench_copy_indexed_seq")
            conn.execute("CREATE SEQUENCE bench_copy_indexed_seq")
            conn.execute(
                "CREATE TABLE bench_copy_indexed"
                " (LIKE catalog_product INCLUDING INDEXES)"
            )
            existing = {
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'bench_copy_indexed'"
                )
            }
            # The file names category and owner by slug and email: keep them as
            # text; columns it lacks get defaults or NULL.
            alters = [f'ADD COLUMN "{c}" text' for c in header if c not in existing]
            alters.append(
                "ALTER COLUMN id SET DEFAULT nextval('bench_copy_indexed_seq')"
            )
            alters += [
                f'ALTER COLUMN "{c}" DROP NOT NULL'
                for c in sorted(existing - set(header) - {"id"})
            ]
            conn.execute(f"ALTER TABLE bench_copy_indexed {', '.join(alters)}")
            if not gin:
                for (name,) in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename ="
                    " 'bench_copy_indexed' AND indexdef LIKE '%% USING gin %%'"
                ).fetchall():
                    conn.execute(f'DROP INDEX "{name}"')
            try:
                return _copy_file(conn, "bench_copy_indexed", header, csv_path)
            finally:
                conn.execute("DROP TABLE bench_copy_indexed")
                conn.execute("DROP SEQUENCE bench_copy_indexed_seq")


def _copy_file(
    conn: psycopg.Connection, table: str, header: list[str], csv_path: Path
) -> float:
    """COPY *csv_path* into *table*; return rows per second."""
    columns = ", ".join(f'"{name}"' for name in header)
    started = time.perf_counter()
    with (
        conn.cursor() as cursor,
        cursor.copy(
            f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)"
        ) as copy,
        csv_path.open("rb") as handle,
    ):
        while block := handle.read(1 << 20):
            copy.write(block)
    seconds = time.perf_counter() - started
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    count = row[0] if row else 0
    return count / seconds


def _merged(parts: list[WrkResult]) -> WrkResult:
    """Return consecutive wrk runs as one (p50: median of the parts; p99: worst)."""
    return WrkResult(
        requests=sum(p.requests for p in parts),
        duration_s=sum(p.duration_s for p in parts),
        p50_ms=statistics.median(p.p50_ms for p in parts),
        p99_ms=max(p.p99_ms for p in parts),
        errors=sum(p.errors for p in parts),
        non_2xx=sum(p.non_2xx for p in parts),
    )


def _cache_targets(cached: Row, uncached: Row | None) -> None:
    """Note issue 5's targets: cached >= 0.7x ping and >= 3x the uncached rate."""
    if cached.ratio is not None:
        cached.notes.append(target(cached.ratio, 0.7, below=False, label="x ping"))
    same_mode = uncached is not None and "1 conn" not in uncached.scenario
    if same_mode and cached.rate and uncached.rate:
        speedup = cached.rate / uncached.rate
        cached.notes.append(f"{speedup:.1f}x uncached")
        cached.notes.append(target(speedup, 3, below=False, label="x uncached"))


def _truncate_products(stack: Stack) -> None:
    with stack.connect() as conn:
        conn.execute("TRUNCATE catalog_product")
    stack.flush_cache()


def _timed_import(stack: Stack, csv_path: Path) -> tuple[float, float, str]:
    """Run import_products; return seconds, peak RSS in MB and its last line."""
    log_path = RESULTS_DIR / "import.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "manage.py", "import_products", str(csv_path)],
            cwd=ROOT,
            env=stack.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    output = log_path.read_text(errors="replace").strip().splitlines()
    if process.returncode != 0:
        raise RuntimeError(f"import_products failed: {' | '.join(output[-5:])}")
    # ru_maxrss is in kilobytes on Linux.
    return seconds, usage.ru_maxrss / 1024, (output[-1] if output else "")


def _name_prefix(name: str) -> str:
    word = name.split()[0] if name.split() else ""
    return word[: max(3, min(len(word), 6))]


def _p99(values: list[float]) -> float:
    from bench.client import percentile

    return percentile(values, 99)


def _bulk_row(
    scenario: str, responses: list[Response], *, ok: int, limit_ms: float
) -> Row:
    servers = [r.server_s * 1000 for r in responses if r.server_s is not None]
    walls = [r.wall_s * 1000 for r in responses]
    server_ms = statistics.median(servers) if servers else None
    errors = [r for r in responses if r.status != ok]
    notes = [f"median of {len(responses)}"]
    if errors:
        notes.append(
            f"{errors[0].status}: {errors[0].body[:120].decode(errors='replace')}"
        )
    if server_ms is not None:
        notes.append(target(server_ms, limit_ms, below=True, label="server ms"))
    return Row(
        scenario,
        rate=BULK_SIZE / (server_ms / 1000) if server_ms else None,
        unit="rows/s",
        p50_ms=statistics.median(walls) if walls else None,
        p99_ms=_p99(walls) if walls else None,
        errors=len(errors),
        server_ms=server_ms,
        notes=notes,
    )


def _single_row(scenario: str, responses: list[Response], ok: int) -> Row:
    walls = [r.wall_s * 1000 for r in responses]
    server_total = sum(r.server_s or 0 for r in responses) * 1000
    errors = [r for r in responses if r.status != ok]
    notes = [f"{len(responses):,} requests one after another; server ms = their sum"]
    if errors:
        notes.append(
            f"{errors[0].status}: {errors[0].body[:120].decode(errors='replace')}"
        )
    wall_total = sum(r.wall_s for r in responses)
    return Row(
        scenario,
        rate=len(responses) / wall_total if wall_total else None,
        unit="req/s",
        p50_ms=statistics.median(walls) if walls else None,
        p99_ms=_p99(walls) if walls else None,
        errors=len(errors),
        server_ms=server_total or None,
        notes=notes,
    )
