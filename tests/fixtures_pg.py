"""A real PostgreSQL server for the tests, started once per session from Debian's binaries.

``NEWSFLOW_TEST_POSTGRES_DSN`` names an existing server instead. Otherwise the first test that asks
for :func:`postgres_dsn` runs ``initdb`` and ``pg_ctl start`` from ``/usr/lib/postgresql/<v>/bin``
(``PG_BIN`` overrides) with a temporary data directory, trust authentication, a free loopback port
and the unix socket in that directory; as root (CI), as the ``postgres`` OS user. It stops at the
end of the session. Tests skip, saying what to install, when no binaries are found.

The fixture is imported by ``tests/connectors/conftest.py`` and ``tests/pipelines/conftest.py``;
both share one server (a process-wide singleton).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from newsflow.broker import free_port

_SERVER: PostgresServer | None = None


def find_bin_dir() -> Path | None:
    configured = os.environ.get("PG_BIN")
    candidates = [Path(configured)] if configured else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    candidates += [p for p in versions if p.parent.name == "15"] + versions[::-1]
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="newsflow-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.as_postgres:
            runuser = shutil.which("runuser")
            cmd = (
                [runuser, "-u", "postgres", "--", *cmd] if runuser else ["su", "postgres", "-c", _quote(cmd)]
            )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr[-2000:]}\n{log}")

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _quote(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def shared_server(config: pytest.Config) -> PostgresServer:
    """The session's server, started on first use and stopped when the session ends."""
    global _SERVER
    if _SERVER is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            pytest.skip(
                "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; install Debian's "
                "postgresql-15 package (apt-get install postgresql-15), set PG_BIN, or point "
                "NEWSFLOW_TEST_POSTGRES_DSN at a server"
            )
        server = PostgresServer(bin_dir)
        server.start()
        _SERVER = server
        config.add_cleanup(_stop_shared)
    return _SERVER


def _stop_shared() -> None:
    global _SERVER
    if _SERVER is not None:
        _SERVER.stop()
        _SERVER = None


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    """Connection string of a real PostgreSQL server (see the module docstring)."""
    external = os.environ.get("NEWSFLOW_TEST_POSTGRES_DSN")
    if external:
        return external
    return shared_server(request.config).dsn
