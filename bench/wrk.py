"""Run wrk (installed from Debian's packages when missing) and read its figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent / "lua"


@dataclass(frozen=True)
class WrkResult:
    """Figures of one wrk run, as its Lua `done` hook reports them."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int

    @property
    def rps(self) -> float:
        """Return the completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0


def ensure_wrk() -> str:
    """Return the wrk executable, installing Debian's `wrk` package when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing it with apt-get", file=sys.stderr)
    apt = shutil.which("apt-get")
    if apt is None:
        raise SystemExit("wrk is not installed and apt-get is unavailable")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*prefix, apt, "update", "-qq"], check=True)
    subprocess.run([*prefix, apt, "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get install wrk did not provide a wrk executable")
    return found


def wrk_command(
    script: str, *, threads: int, connections: int, duration_s: int, timeout_s: int
) -> list[str]:
    """Return the start of a wrk command line running bench/lua/*script*."""
    return [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(LUA_DIR / script),
    ]


def run_wrk(
    *,
    base_url: str,
    paths_file: Path,
    duration_s: int,
    connections: int,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    timeout_s: int = 10,
) -> WrkResult:
    """Replay the paths in *paths_file* against *base_url* for *duration_s* seconds."""
    command = wrk_command(
        "paths.lua",
        threads=threads,
        connections=connections,
        duration_s=duration_s,
        timeout_s=timeout_s,
    )
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command += [base_url, "--", str(paths_file)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(
            f"wrk failed (exit {completed.returncode}): {completed.stderr.strip()}"
        )
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=socket_errors + data["status"],
        non_2xx=data["status"],
    )
