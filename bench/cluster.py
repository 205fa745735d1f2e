"""A scale-out topology on this machine: PostgreSQL primary + streaming standby,
a private Redis, app instances and nginx, each a real server in a temp dir.

The pieces serve `make cluster` (python -m bench.cluster), the bench's cluster
group and the tests (tests/config/test_replica.py, tests/test_cluster.py).
Ports come from BENCH_PORTS ("18400-18499") when set, else from the OS.
PostgreSQL refuses to run as root: as root, its programs run as the
`postgres` user (runuser).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.stack import ROOT, Stack, _wait_healthy, free_port


def _newest_pg_bin() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


# Debian's server programs (not on PATH): PG_BIN, else the newest installed.
PG_BIN = Path(os.environ["PG_BIN"]) if os.environ.get("PG_BIN") else _newest_pg_bin()
NGINX_TEMPLATE = ROOT / "docker" / "nginx.conf"
# The staff login running_cluster creates with a new database.
STAFF_EMAIL = "staff@cluster.invalid"
STAFF_PASSWORD = "cluster-Pa55word-not-secret"
_taken: set[int] = set()


def spare_port() -> int:
    """Return a free port (from BENCH_PORTS when set) not handed out before here."""
    port = free_port(exclude=_taken)
    _taken.add(port)
    return port


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str], *, timeout: float = 120) -> None:
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}):\n"
            f"{completed.stdout[-1500:]}{completed.stderr[-1500:]}"
        )


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


# Small, fast, and a standby that answers reads; pg_stat_statements lets the
# tests see which server ran which statement.
_PRIMARY_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 100
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 5
wal_keep_size = 256MB
hot_standby = on
fsync = off
shared_preload_libraries = 'pg_stat_statements'
log_min_messages = warning
"""


@dataclass
class PostgresPair:
    """A PostgreSQL primary and a standby made from it with `pg_basebackup -R`."""

    primary_port: int = field(default_factory=spare_port)
    standby_port: int = field(default_factory=spare_port)
    root: Path = field(default_factory=lambda: _private_dir("cluster-pg-"))

    @property
    def primary_dir(self) -> Path:
        """Return the primary's data directory."""
        return self.root / "primary"

    @property
    def standby_dir(self) -> Path:
        """Return the standby's data directory."""
        return self.root / "standby"

    def url(self, database: str = "postgres", *, standby: bool = False) -> str:
        """Return the URL of *database* on the primary (or the standby)."""
        port = self.standby_port if standby else self.primary_port
        return f"postgres://postgres@127.0.0.1:{port}/{database}"

    def connect(self, database: str = "postgres", *, standby: bool = False):
        """Open an autocommit connection to the primary (or the standby)."""
        return psycopg.connect(self.url(database, standby=standby), autocommit=True)

    def start(self) -> PostgresPair:
        """Create and start both servers; the standby streams from the primary."""
        _run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.primary_dir), "-U", "postgres"]
                + ["-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]
            )
        )
        conf = _PRIMARY_CONF.format(port=self.primary_port, sockets=self.root)
        with (self.primary_dir / "postgresql.conf").open("a") as handle:
            handle.write(conf)
        self._pg_ctl(self.primary_dir, "start")
        with self.connect() as conn:  # where statements() reads from
            conn.execute("CREATE EXTENSION pg_stat_statements")
        _run(
            _as_postgres(
                [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1"]
                + ["-p", str(self.primary_port), "-U", "postgres"]
                + ["-D", str(self.standby_dir), "-R", "-X", "stream", "-c", "fast"]
            )
        )
        # postgresql.auto.conf (pg_basebackup -R wrote primary_conninfo there)
        # is read last: the standby's own port wins over the copied one.
        with (self.standby_dir / "postgresql.auto.conf").open("a") as handle:
            handle.write(f"port = {self.standby_port}\n")
        self.start_standby()
        return self

    def _pg_ctl(self, data: Path, action: str, *extra: str) -> None:
        log = self.root / f"{data.name}.log"
        _run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log)]
                + ["-w", "-t", "60", action, *extra]
            )
        )

    def start_standby(self) -> None:
        """Start the standby (again) and wait until it answers reads."""
        self._pg_ctl(self.standby_dir, "start")

    def stop_standby(self) -> None:
        """Stop the standby: its connections are closed, new ones refused."""
        self._pg_ctl(self.standby_dir, "stop", "-m", "fast")

    def pause_replay(self) -> None:
        """Stop applying WAL on the standby: it lags behind every later write."""
        with self.connect(standby=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """Apply WAL again, and wait until the standby has caught up."""
        with self.connect(standby=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        self.wait_caught_up()

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Return once the standby has replayed everything the primary wrote so far."""
        with self.connect() as primary:
            target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with self.connect(standby=True) as standby:
            while time.monotonic() < deadline:
                behind = standby.execute(
                    "SELECT pg_last_wal_replay_lsn() < %s::pg_lsn", [str(target)]
                ).fetchone()[0]
                if not behind:
                    return
                time.sleep(0.05)
        raise RuntimeError("the standby did not catch up in time")

    def create_database(self, name: str) -> None:
        """Create *name* on the primary; the standby copies it."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.wait_caught_up()

    def has_database(self, name: str) -> bool:
        """Return whether *name* exists on the primary."""
        with self.connect() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return found.fetchone() is not None

    def statements(self, database: str, table: str, *, standby: bool) -> int:
        """Return how many statements naming *table* ran in *database* on one server."""
        with self.connect(standby=standby) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = %s AND s.query LIKE %s",
                [database, f'%"{table}"%'],
            ).fetchone()
        return int(row[0])

    def stop(self) -> None:
        """Stop both servers and delete their files."""
        for data in (self.standby_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                with suppress(RuntimeError):
                    self._pg_ctl(data, "stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    """A private redis-server (no persistence: a cache)."""

    port: int = field(default_factory=spare_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Return the URL of its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it and wait until it answers."""
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class AppInstance:
    """One app server (`python -m config.serve`) on its own port."""

    stack: Stack
    extra_env: dict[str, str]
    name: str = "app"
    port: int = field(default_factory=spare_port)
    process: subprocess.Popen | None = None
    metrics_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="cluster-prom-"))
    )

    @property
    def base_url(self) -> str:
        """Return where it listens."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> AppInstance:
        """Start it and (unless not *wait*) wait for /healthz."""
        env = self.stack.env(
            **self.extra_env,
            HOST="127.0.0.1",
            PORT=str(self.port),
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
        )
        self.stack.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.stack.log_path.open("ab") as log:
            log.write(f"\n=== {self.name} on port {self.port}\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.serve"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        """Return once it answers /healthz."""
        assert self.process is not None
        _wait_healthy(self.base_url, self.process, self.stack.log_path)

    def kill(self) -> None:
        """Kill it at once (SIGKILL to its whole process group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM, SIGKILL after 30 s) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def nginx_binary() -> str | None:
    """Return Debian's nginx (in /usr/sbin, often off a user's PATH), or None."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


def nginx_config(template: str, *, port: int, upstreams: list[str], root: Path) -> str:
    """Return docker/nginx.conf made to run here: its own port, these upstreams.

    Only what differs between compose and this machine changes: the listen
    port, the upstream servers (compose: the `api` service name through
    Docker's DNS), the pid file and temp paths; every proxy setting is the
    production file's.
    """
    lines = []
    skip_resolver = ("resolver ", "resolver_timeout ")
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith(skip_resolver):
            continue  # no Docker DNS here: fixed addresses
        if stripped.startswith("server api:"):
            # Same failure settings; fixed addresses instead of `api` resolved.
            indent = line[: len(line) - len(line.lstrip())]
            _, _, *params = stripped.rstrip(";").split()
            params = [param for param in params if param != "resolve"]
            lines.extend(
                f"{indent}server {' '.join([address, *params])};"
                for address in upstreams
            )
            continue
        if stripped == "listen 80;":
            line = line.replace("listen 80;", f"listen 127.0.0.1:{port};")
        elif stripped.startswith("pid "):
            line = f"pid {root / 'nginx.pid'};"
        elif stripped.startswith("access_log "):
            line = line.replace("/dev/stdout", str(root / "access.log"))
        elif stripped.startswith("error_log "):
            line = line.replace("/dev/stderr", str(root / "error.log"))
        elif stripped == "http {":
            lines.append(line)
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                lines.append(f"    {kind}_temp_path {root / kind};")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class Nginx:
    """Debian's nginx running docker/nginx.conf in front of *upstreams*."""

    upstreams: list[str]
    port: int = field(default_factory=spare_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nginx-")))
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """Return where it listens."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        """Write the configuration, check it with `nginx -t` and start nginx."""
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        self.root.chmod(0o755)  # nginx's workers (nobody, under root) write temp files
        conf = self.root / "nginx.conf"
        conf.write_text(
            nginx_config(
                NGINX_TEMPLATE.read_text(),
                port=self.port,
                upstreams=self.upstreams,
                root=self.root,
            )
        )
        _run([binary, "-t", "-q", "-c", str(conf), "-e", str(self.root / "error.log")])
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-e", str(self.root / "error.log")]
            + ["-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2):  # noqa: S310
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer; see {self.root / 'error.log'}")

    def stop(self) -> None:
        """Stop nginx and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Cluster:
    """PostgreSQL primary + standby, Redis, app instances, nginx in front (or None)."""

    pair: PostgresPair
    redis: RedisServer
    apps: list[AppInstance]
    nginx: Nginx | None
    stack: Stack


def app_env(*, workers: int = 1, threads: int = 2, **extra: str) -> dict[str, str]:
    """Return the environment of an app instance of the cluster."""
    return {
        "WORKERS": str(workers),
        "SERVER_THREADS": str(threads),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Tests and the bench sign in many times from one address.
        "THROTTLE_LOGIN": "10000/min",
        "THROTTLE_REGISTER": "10000/min",
        "DB_REPLICA_RETRY_AFTER": "1",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def running_cluster(
    *,
    instances: int = 2,
    pair: PostgresPair | None = None,
    database: str = "app",
    workers: int = 1,
    threads: int = 2,
    log_path: Path | None = None,
    seed: tuple[str, ...] = ("--users", "20", "--products", "200"),
    front: bool = True,
    **extra_env: str,
) -> Iterator[Cluster]:
    """Start the whole topology (or reuse *pair*); stop what it started on exit."""
    with ExitStack() as stop:
        if pair is None:
            pair = PostgresPair()
            stop.callback(pair.stop)
            pair.start()
        redis = RedisServer()
        stop.callback(redis.stop)
        redis.start()
        stack = Stack(
            pg_server=f"postgres://postgres@127.0.0.1:{pair.primary_port}",
            database=database,
            redis_url=redis.url,
            **({"log_path": log_path} if log_path else {}),
        )
        if not pair.has_database(database):
            # Migrated, seeded and given its staff login once per pair.
            pair.create_database(database)
            stack.manage("migrate", "--noinput", "-v", "0")
            if seed:
                stack.manage("seed_demo", *seed, "--seed", "1")
            stack.manage(
                "ensure_admin", "--email", STAFF_EMAIL, "--password", STAFF_PASSWORD
            )
        # As `make run` does: /readyz fails without the static files' manifest.
        stack.manage("collectstatic", "--noinput", "-v", "0")
        pair.wait_caught_up()
        env = app_env(
            workers=workers,
            threads=threads,
            DATABASE_REPLICA_URL=pair.url(database, standby=True),
            **extra_env,
        )
        apps = []
        for index in range(instances):
            app = AppInstance(stack, env, name=f"app{index + 1}")
            stop.callback(app.stop)
            apps.append(app.start(wait=False))
        for app in apps:
            app.wait_healthy()
        nginx = None
        if front:
            nginx = Nginx([f"127.0.0.1:{app.port}" for app in apps])
            stop.callback(nginx.stop)
            nginx.start()
        yield Cluster(pair=pair, redis=redis, apps=apps, nginx=nginx, stack=stack)


def main(argv: list[str] | None = None) -> None:
    """`make cluster`: start the topology, print where it is, run until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    args = parser.parse_args(argv)
    seed = ("--users", str(args.users), "--products", str(args.products))
    with running_cluster(
        instances=args.instances, workers=args.workers, threads=args.threads, seed=seed
    ) as cluster:
        print(f"nginx:    {cluster.nginx.base_url}/ (docker/nginx.conf)")
        for app in cluster.apps:
            print(f"{app.name}:     {app.base_url}/")
        print(f"primary:  {cluster.pair.url('app')}")
        print(f"standby:  {cluster.pair.url('app', standby=True)}")
        print(f"redis:    {cluster.redis.url}")
        print(f"logs:     {cluster.stack.log_path}")
        print("Ctrl-C stops everything.", flush=True)
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
