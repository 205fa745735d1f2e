"""What the dashboard's statistics triggers add to a single product create.

`python -m bench.stats_cost --database DB --redis-url URL` alternates the
product table's statistics triggers (catalog migration 0006) off and on, on
one database and one checkout: off is the create path of the commits before
them (the code of a create did not change, only the database's work). Per
setting and round: creates in process (Django's test client, JWT, thread CPU
and wall per create, medians), then creates served by the main server
configuration from 4 client threads for a few seconds. The products made are
deleted in the setting that made them, so the statistics stay exact. Prints
one JSON line per round and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid

from bench import data
from bench.client import Client, jwt_access_token
from bench.stack import BENCH_PASSWORD, BENCH_STAFF_EMAIL, ServerConfig, Stack, server

TRIGGERS = ("insert", "update", "delete")
SKU_PREFIX = "BENCH-STATS-"


def set_triggers(stack: Stack, *, on: bool) -> None:
    """Enable (ALWAYS, as migrated) or disable the product table's stats triggers."""
    with stack.connect() as conn:
        for op in TRIGGERS:
            state = "ENABLE ALWAYS" if on else "DISABLE"
            conn.execute(
                f"ALTER TABLE catalog_product {state} TRIGGER"
                f" catalog_product_stats_{op}"
            )


def delete_made(stack: Stack) -> None:
    with stack.connect() as conn:
        conn.execute(
            "DELETE FROM catalog_product WHERE sku LIKE %s", [SKU_PREFIX + "%"]
        )


def served(base_url: str, stack: Stack, seconds: float, threads: int) -> float:
    """Return the creates per second that *threads* closed loops get served."""
    token = jwt_access_token(
        Client(base_url), stack.api_prefix, BENCH_STAFF_EMAIL, BENCH_PASSWORD
    )
    with stack.connect() as conn:
        category = conn.execute("SELECT min(id) FROM catalog_category").fetchone()[0]
    counts = [0] * threads
    errors = [0] * threads
    deadline = time.perf_counter() + seconds
    run = uuid.uuid4().hex[:6].upper()

    def loop(index: int) -> None:
        client = Client(base_url)
        client.headers["Authorization"] = f"Bearer {token}"
        n = 0
        while time.perf_counter() < deadline:
            response = client.request(
                "POST",
                f"{stack.api_prefix}/products/",
                json_body={
                    "sku": f"{SKU_PREFIX}{run}-{index}-{n}",
                    "name": "Stats cost probe",
                    "price": "9.99",
                    "stock": n % 20,
                    "category": category,
                },
            )
            n += 1
            if response.status == 201:
                counts[index] += 1
            else:
                errors[index] += 1
        client.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if sum(errors):
        raise RuntimeError(f"{sum(errors)} creates failed")
    return sum(counts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Alternate the triggers off and on; print each round and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    stack = Stack(database=args.database, redis_url=args.redis_url)
    data.django_side(stack, "ensure-users")
    results: dict[str, dict[str, list[float]]] = {
        s: {"cpu_ms": [], "wall_ms": [], "served": []} for s in ("off", "on")
    }
    config = ServerConfig("granian 2x4", workers=2, threads=4)
    try:
        with server(stack, config) as base_url:
            for round_ in range(args.rounds):
                for setting in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    set_triggers(stack, on=setting == "on")
                    try:
                        here = data.django_side(
                            stack, "create-cost", str(args.creates), SKU_PREFIX
                        )
                        rate = served(base_url, stack, args.seconds, args.threads)
                    finally:
                        # Deleted in the setting that made them.
                        delete_made(stack)
                    row = {"round": round_, "triggers": setting, **here, "served": rate}
                    sys.stdout.write(json.dumps(row) + "\n")
                    sys.stdout.flush()
                    results[setting]["cpu_ms"].append(here["cpu_ms"])
                    results[setting]["wall_ms"].append(here["wall_ms"])
                    results[setting]["served"].append(rate)
    finally:
        set_triggers(stack, on=True)
        stack.flush_cache()
    summary = {
        setting: {k: round(statistics.median(v), 2) for k, v in figures.items()}
        for setting, figures in results.items()
    }
    summary["served_on_over_off"] = round(
        summary["on"]["served"] / summary["off"]["served"], 3
    )
    sys.stdout.write(json.dumps({"summary": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
