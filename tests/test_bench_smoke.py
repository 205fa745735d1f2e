import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import User
from bench.cli import parse_args
from bench.client import Client, admin_session_cookie, jwt_access_token
from bench.data import remove_leftovers
from bench.mix import (
    MixRun,
    PoolProduct,
    knee,
    median_run,
    mix_email,
    run_mix_wrk,
    write_data_file,
)
from bench.report import Row, render_markdown, render_text, target
from bench.stack import Stack
from bench.wrk import run_wrk
from catalog.models import Product
from tests.factories import TEST_PASSWORD, CategoryFactory, ProductFactory, UserFactory


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status = 404 if self.path == "/missing" else 200
        body = b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_replays_every_path_and_counts_4xx_as_errors(tmp_path):
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    paths_file = tmp_path / "paths.txt"
    paths_file.write_text("/a?x=1\nGET /b\n/missing\n")
    try:
        result = run_wrk(
            base_url=f"http://127.0.0.1:{server.server_address[1]}",
            paths_file=paths_file,
            duration_s=1,
            connections=1,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert set(_Recorder.seen) == {"/a?x=1", "/b", "/missing"}
    assert result.requests >= 3
    # wrk stops counting at the deadline: the request in flight then reaches the
    # server but not wrk's tally.
    missing = _Recorder.seen.count("/missing")
    assert missing - 1 <= result.non_2xx <= missing
    assert result.errors >= result.non_2xx > 0
    assert result.p99_ms >= result.p50_ms > 0


def test_table_has_one_line_per_scenario_with_ratio_and_dashes():
    rows = [
        Row(
            "ping (/healthz)", rate=2345.6, p50_ms=20.0, p99_ms=40.0, errors=0, ratio=1
        ),
        Row("dashboard uncached", notes=["not run: GET answered 404"]),
    ]
    text = render_text(rows).splitlines()
    assert len(text) == 4
    assert "2,346 req/s" in text[2] and "1.00x" in text[2]
    assert text[3].startswith("dashboard uncached") and "not run" in text[3]
    assert render_markdown(rows).count("\n") == 3


def test_targets_say_met_or_not():
    assert target(120.0, 180, below=True, label="server ms").endswith(": met")
    assert target(19.5, 20, below=False, label="speed-up").endswith("NOT met")


def test_unknown_group_is_refused():
    with pytest.raises(SystemExit):
        parse_args(["--only", "admin,nonsense"])
    assert parse_args(["--only", "ping,cache"]).groups == ["cache"]


@pytest.mark.django_db(transaction=True)
def test_harness_signs_in_to_the_api_and_the_admin(live_server, admin_user):
    product = ProductFactory()
    client = Client(live_server.url)
    token = jwt_access_token(
        client, settings.API_PREFIX, admin_user.email, TEST_PASSWORD
    )
    detail = client.get(
        f"{settings.API_PREFIX}/products/{product.pk}/",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert detail.status == 200
    assert detail.server_s is not None

    cookie = admin_session_cookie(client, admin_user.email, TEST_PASSWORD)
    page = client.get(
        f"/admin/catalog/product/{product.pk}/change/", headers={"Cookie": cookie}
    )
    assert page.status == 200
    assert product.sku.encode() in page.body
    client.close()


def _mix_run(rps: float, p99_ms: float, connections: int) -> MixRun:
    return MixRun(
        connections=connections,
        target_rate=None,
        requests=int(rps * 10),
        duration_s=10.0,
        p50_ms=p99_ms / 4,
        p95_ms=p99_ms / 2,
        p99_ms=p99_ms,
        socket_errors=0,
        status_errors=0,
        kinds={},
        bad={},
        hits=0,
        misses=0,
        exhausted=0,
    )


def test_mix_knee_is_the_last_step_before_growth_stops_or_p99_doubles():
    flat = [_mix_run(100, 50, 4), _mix_run(150, 60, 8), _mix_run(160, 70, 16)]
    assert knee(flat)[0] == 1
    assert "+7%" in knee(flat)[1]
    slow = [_mix_run(100, 50, 4), _mix_run(130, 120, 8), _mix_run(200, 130, 16)]
    assert knee(slow) == (0, "c=8 has p99 2.4x (> 2x)")
    rising = [_mix_run(100, 50, 4), _mix_run(200, 60, 8)]
    assert knee(rising)[0] == 1 and "not reached" in knee(rising)[1]
    repeats = [_mix_run(90, 50, 4), _mix_run(30, 90, 4), _mix_run(60, 70, 4)]
    assert median_run(repeats) is repeats[2]


class _MixRecorder(BaseHTTPRequestHandler):
    """Echo X-Request-ID; answer detail reads HIT then MISS in turn."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.lock:
            self.seen.append((self.command, self.path, self.headers["Authorization"]))
            count = len(self.seen)
        status = {"POST": 201, "DELETE": 204}.get(self.command, 200)
        self.send_response(status)
        self.send_header("X-Request-ID", self.headers.get("X-Request-ID", ""))
        if self.command == "GET" and "?" not in self.path:
            self.send_header("X-Cache", "HIT" if count % 2 else "MISS")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_mix_lua_writes_only_own_products_and_deletes_each_once(tmp_path):
    _MixRecorder.seen = []
    pool = [PoolProduct(1000 + i, 1 + i % 3, 7, f"BENCH-MIX-P-{i}") for i in range(600)]
    data_file = write_data_file(
        tmp_path / "mix.txt",
        api="/api/v1",
        pages=5,
        tokens=["tok-a", "tok-b", "tok-c"],
        detail_ids=[1, 2, 3],
        category_ids=[7, 8],
        pool=pool,
    )
    server = _serve(_MixRecorder)
    try:
        run = run_mix_wrk(
            base_url=f"http://127.0.0.1:{server.server_address[1]}",
            data_file=data_file,
            duration_s=2,
            connections=4,
            threads=2,
            rate=150,
        )
    finally:
        server.shutdown()
        server.server_close()
    seen = _MixRecorder.seen
    owners = {
        f"/api/v1/products/{p.id}/": f"Bearer tok-{'abc'[p.owner - 1]}" for p in pool
    }
    deleted = [path for method, path, _ in seen if method == "DELETE"]
    assert deleted and len(deleted) == len(set(deleted))
    for method, path, token in seen:
        if method in {"PATCH", "PUT", "DELETE"}:
            assert owners[path] == token
        else:
            assert token in {"Bearer tok-a", "Bearer tok-b", "Bearer tok-c"}
        if method == "GET" and "?" in path:
            offset = int(path.rsplit("offset=", 1)[1])
            assert offset in {0, 20, 40, 60, 80}
    assert {method for method, _, _ in seen} == {
        "GET",
        "POST",
        "PATCH",
        "PUT",
        "DELETE",
    }
    assert run.errors == 0 and run.exhausted == 0
    assert run.hits + run.misses == run.kinds["d"] > 0
    assert sum(run.kinds.values()) == run.requests
    # Pacing holds the sends to 150 req/s at most (a slower machine sends fewer).
    assert run.requests <= 150 * run.duration_s + 10
    assert run.cpu_s > 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.django_db(transaction=True)
def test_mix_runs_against_the_api_and_its_leftovers_are_removed(live_server, tmp_path):
    users = [
        UserFactory(email=mix_email(i), username=mix_email(i).split("@")[0])
        for i in range(2)
    ]
    category = CategoryFactory()
    readable = ProductFactory.create_batch(3, category=category)
    pool = [
        ProductFactory(owner=users[i % 2], category=category, sku=f"BENCH-MIX-P-{i}")
        for i in range(40)
    ]
    client = Client(live_server.url)
    tokens = [
        jwt_access_token(client, settings.API_PREFIX, u.email, TEST_PASSWORD)
        for u in users
    ]
    client.close()
    data_file = write_data_file(
        tmp_path / "mix.txt",
        api=settings.API_PREFIX,
        pages=2,
        tokens=tokens,
        detail_ids=[p.pk for p in readable],
        category_ids=[category.pk],
        pool=[
            PoolProduct(p.pk, 1 + users.index(p.owner), category.pk, p.sku)
            for p in pool
        ],
    )
    run = run_mix_wrk(
        base_url=live_server.url, data_file=data_file, duration_s=1, connections=2
    )
    assert run.requests > 0 and run.errors == 0, run
    # wrk stops counting at the deadline: up to one request per connection
    # reaches the server uncounted.
    owned = Product.objects.filter(owner__in=users)
    created = owned.exclude(pk__in=[p.pk for p in pool]).count()
    assert run.kinds["c"] <= created <= run.kinds["c"] + 2
    deleted = 40 - owned.filter(pk__in=[p.pk for p in pool]).count()
    assert run.kinds["x"] <= deleted <= run.kinds["x"] + 2

    db = connection.settings_dict
    server = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}"
    remove_leftovers(Stack(pg_server=server, database=db["NAME"]))
    assert not User.objects.filter(pk__in=[u.pk for u in users]).exists()
    assert Product.objects.count() == 3


def test_mix_steps_are_positive_connection_counts():
    assert parse_args(["--mix-steps", "4, 8,16"]).mix_steps == (4, 8, 16)
    assert "mix" in parse_args([]).groups
    with pytest.raises(SystemExit):
        parse_args(["--mix-steps", "4,0"])
    with pytest.raises(SystemExit):
        parse_args(["--mix-steps", "four"])


@pytest.mark.django_db(transaction=True)
def test_same_shape_copy_builds_the_deferred_indexes_and_drops_its_twin(
    tmp_path, monkeypatch
):
    import bench.groups.imports as imports

    path = tmp_path / "p.csv"
    header = ["sku", "name", "slug", "description", "price", "stock", "is_active",
              "category", "owner"]  # fmt: skip
    path.write_text(
        ",".join(header)
        + "\n"
        + "".join(
            f"S-{i},Walnut desk {i},walnut-desk-{i},Solid wood,{i}.50,{i},true,"
            f"desks,u{i}@example.com\n"
            for i in range(50)
        ),
        encoding="utf-8",
    )
    stack = Stack(
        database=connection.settings_dict["NAME"], redis_url=settings.REDIS_URL
    )
    built: list[str] = []
    build = imports._build_index

    def spy(stack: Stack, statement: str, memory: str) -> None:
        built.append(statement)
        build(stack, statement, memory)

    monkeypatch.setattr(imports, "_build_index", spy)

    assert imports._copy_same_shape(stack, path, header) > 0

    # The Meta.indexes and the owner's and the SKU's LIKE index, as the import.
    assert len(built) == len(Product._meta.indexes) + 2
    # The GIN build is started first, as the import starts it.
    assert " USING gin " in built[0]
    assert all(" ON bench_copy_same " in statement for statement in built)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('bench_copy_same')")
        assert cursor.fetchone()[0] is None
