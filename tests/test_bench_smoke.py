import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings

from bench.cli import parse_args
from bench.client import Client, admin_session_cookie, jwt_access_token
from bench.report import Row, render_markdown, render_text
from bench.scenarios import target
from bench.wrk import run_wrk
from tests.factories import TEST_PASSWORD, ProductFactory


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
