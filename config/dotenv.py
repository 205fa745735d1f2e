"""Read a `.env` file under the environment: a variable already set is kept.

The settings read `.env` this way, and so does `make run`, through
``python -m config.dotenv .env``: it prints an ``export NAME=value`` line for
each variable the file adds, for the shell to ``eval``. Exporting the file
wholesale (``set -a; source .env``) would override what a deployment exported.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import environ


def load_env_file(path: str | Path) -> dict[str, str]:
    """Set the variables of *path* the environment lacks; return those it set."""
    before = set(os.environ)
    environ.Env.read_env(path, overwrite=False)
    return {name: os.environ[name] for name in os.environ.keys() - before}


def main(argv: list[str]) -> int:
    """Print shell exports for the variables of the file that are not set."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m config.dotenv FILE\n")
        return 2
    for name, value in sorted(load_env_file(argv[0]).items()):
        sys.stdout.write(f"export {name}={shlex.quote(value)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
