"""users: POST /users/bulk/ with 1,000 users without passwords (issue 3)."""

from __future__ import annotations

import argparse
import uuid

from bench import data
from bench.harness import BULK_SIZE, Harness, bulk_row
from bench.stack import BENCH_EMAIL_DOMAIN

SCENARIO = f"users bulk create {BULK_SIZE:,} (no passwords)"


def run(h: Harness, args: argparse.Namespace) -> None:
    """Create options.bulk_repeat batches of users; remove them afterwards."""
    try:
        headers = h.bearer("staff")
    except RuntimeError as exc:
        h.skip(SCENARIO, str(exc))
        return
    client = h.client(headers)
    responses = []
    run_id = uuid.uuid4().hex[:8]
    try:
        for rep in range(h.options.bulk_repeat):
            body = [
                {
                    "email": f"bulk-{run_id}-{rep}-{i}@{BENCH_EMAIL_DOMAIN}",
                    "username": f"bulk-{run_id}-{rep}-{i}",
                }
                for i in range(BULK_SIZE)
            ]
            response = client.request("POST", f"{h.api}/users/bulk/", json_body=body)
            if response.status == 404:
                h.skip(SCENARIO, "POST /users/bulk/ answered 404")
                return
            responses.append(response)
    finally:
        client.close()
        data.remove_leftovers(h.stack)
        h.stack.flush_cache()
    h.add(bulk_row(SCENARIO, responses, ok=201, limit_ms=200))
