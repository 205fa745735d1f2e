"""The scenario groups of `make bench`: one module each, ``run(h, args)`` its door.

bench/cli.py's GROUPS names them; bench/harness.py holds what they share.
"""
