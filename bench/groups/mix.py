"""mix: the seed article's mixed read/write load (bench/mix.py), with a baseline."""

from __future__ import annotations

import argparse

from bench.harness import Harness
from bench.mix import Mix, MixOptions, Side, rows
from bench.stack import short_commit


def run(h: Harness, args: argparse.Namespace) -> None:
    """Run the mix against this checkout (and --mix-server-root's, if given)."""
    options = MixOptions(
        steps=args.mix_steps,
        step_s=args.mix_step_duration,
        repeat=args.mix_repeat,
        hold_s=args.mix_hold,
        users=args.mix_users,
        detail_ids=args.mix_detail_ids,
        list_pages=args.mix_list_pages,
        seed=args.seed,
    )
    main = h.servers["main"]
    sides = [Side(f"this checkout, {main.label}", main)]
    if args.mix_server_root is not None:
        root = args.mix_server_root.resolve()
        commit = short_commit(root)
        # The baseline is served the way its commit served by default.
        baseline = h.servers["sync"]
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
