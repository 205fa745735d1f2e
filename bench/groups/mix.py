"""mix: the seed article's mixed read/write load (bench/mix.py), with a baseline."""

from __future__ import annotations

import argparse

from bench.harness import Harness
from bench.mix import Mix, Side, options_from, rows
from bench.stack import short_commit


def run(h: Harness, args: argparse.Namespace) -> None:
    """Run the mix against this checkout (and --mix-server-root's, if given)."""
    options = options_from(args)
    main = h.servers["main"]
    sides = [Side(f"this checkout, {main.label}", main)]
    if args.mix_server_root is not None:
        root = args.mix_server_root.resolve()
        commit = short_commit(root)
        # By default the baseline is served the way d231dca served by default.
        baseline = h.servers[args.mix_server]
        label = f"baseline {commit or root.name}, {baseline.label}"
        sides.append(Side(label, baseline, root))
    mix = Mix(
        h.stack,
        options,
        detail_ids=h.sample.product_ids,
        category_ids=h.sample.category_ids,
        workdir=h.workdir,
        log=h.log,
    )
    for row in rows(mix.run(sides), options):
        h.add(row)
