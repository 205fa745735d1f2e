"""ping (/healthz, no I/O): the reference every ratio is taken against."""

from __future__ import annotations

import argparse

from bench.harness import Harness


def run(h: Harness, args: argparse.Namespace) -> None:
    """Measure /healthz with wrk and on one connection; set the references."""
    row = h.load("ping (/healthz)", ["/healthz"], notes=["wrk reference"])
    h.ping_wrk = row.rate
    row.ratio = 1.0
    seq = h.sequential(
        "ping (/healthz, 1 conn)", ["/healthz"] * 300, notes=["1-conn reference"]
    )
    h.ping_seq = seq.rate
    seq.ratio = 1.0


def again(h: Harness, args: argparse.Namespace) -> None:
    """Measure ping once more: its ratio to the first shows the run's drift."""
    row = h.load("ping again (drift check)", ["/healthz"])
    row.notes.append("x ping near 1.00 means a steady machine")
