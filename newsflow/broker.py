"""A real single-node Apache Kafka 4.x broker in KRaft mode, run from Maven Central jars.

``newsflow kafka up`` resolves the broker's classpath with ``mvn dependency:copy-dependencies``
(``infra/kafka/pom.xml``) into a cache that is not committed, formats storage on first use, starts
``kafka.Kafka`` on 127.0.0.1 and waits until it answers metadata requests. Data, logs, the pid file
and the generated ``server.properties`` live under ``<data_dir>/kafka``. ``up`` is idempotent and a
stale pid file (a broker that died) is cleaned up.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsflow.config import REPO_ROOT, Settings
from newsflow.errors import BrokerError, JavaNotFound, KafkaJarsUnavailable, PortBusy

log = logging.getLogger(__name__)

LOG4J_CONFIG = REPO_ROOT / "infra" / "kafka" / "log4j2.properties"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class BrokerStatus:
    bootstrap: str
    pid: int | None
    running: bool
    reachable: bool
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        if self.reachable and self.running:
            return f"Kafka broker running (pid {self.pid}) at {self.bootstrap}; data in {self.data_dir}"
        if self.reachable:
            return f"a Kafka broker not started by newsflow answers at {self.bootstrap}"
        if self.running:
            return f"Kafka broker process {self.pid} is up but not answering at {self.bootstrap} yet"
        return f"no Kafka broker at {self.bootstrap}"


def ensure_jars(settings: Settings) -> Path:
    """Return the directory holding the broker classpath, resolving it with Maven if needed."""
    libs = settings.broker.libs_dir
    if any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaJarsUnavailable(
            f"the Kafka jars are not cached in {libs} and Maven ('mvn') is not installed; install "
            "Maven (apt-get install maven) or copy the jars there (NEWSFLOW_BROKER_LIBS_DIR)"
        )
    log.info("resolving Kafka jars from Maven Central into %s", libs)
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(settings.broker.pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        last = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise KafkaJarsUnavailable(
            "could not resolve the Kafka jars from Maven Central (is the registry reachable? "
            f"is ~/.m2/settings.xml right?): {' | '.join(last) or 'no output'}; retry 'make kafka-jars' "
            f"once the registry is reachable, or copy the jars into {libs}"
        )
    return libs


def find_java() -> str:
    """The java executable to run the broker with (JAVA_HOME first, then PATH); Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(java_home) / "bin" / "java")] if java_home else []
    which = shutil.which("java")
    if which:
        candidates.append(which)
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    raise JavaNotFound(
        "Java 17+ is needed to run the Kafka broker and none was found; install a JDK "
        "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    )


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (for tests and throwaway brokers)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when something at ``bootstrap`` answers a Kafka ApiVersions handshake."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000) + 1000,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class LocalBroker:
    """Start, stop and inspect the local KRaft broker described by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        host, port = settings.kafka.first_host_port
        self.host = host
        self.port = port
        self.controller_port = settings.broker.controller_port or port + 1
        self.home = (settings.data_dir / "kafka").resolve()
        self.log_dirs = self.home / "data"
        self.log_file = self.home / "broker.log"
        self.pid_file = self.home / "broker.pid"
        self.properties = self.home / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # -- inspection ---------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid from the pid file if that process is alive, else None (a stale file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if pid_alive(pid):
            return pid
        log.info("removing stale pid file %s (process %s is gone)", self.pid_file, pid)
        self.pid_file.unlink(missing_ok=True)
        return None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(
            bootstrap=self.bootstrap,
            pid=pid,
            running=pid is not None,
            reachable=broker_answers(self.bootstrap, timeout_s=1.5),
            data_dir=self.home,
            log_file=self.log_file,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def up(self) -> BrokerStatus:
        """Start the broker unless one already answers; return once it accepts requests."""
        if self.host not in LOOPBACK:
            raise BrokerError(
                f"NEWSFLOW_KAFKA_BOOTSTRAP points at {self.bootstrap}; 'newsflow kafka up' only manages a "
                "local broker on 127.0.0.1 (use a 127.0.0.1:<port> address, or manage that cluster yourself)"
            )
        pid = self.pid()
        if pid is None and broker_answers(self.bootstrap, timeout_s=1.5):
            log.info("a Kafka broker already answers at %s; nothing to start", self.bootstrap)
            return self.status()
        if pid is None:
            for port in (self.port, self.controller_port):
                if not port_is_free(self.host, port):
                    raise PortBusy(
                        f"port {port} on {self.host} is in use by another program that is not a Kafka "
                        "broker; stop it, or pick free ports with NEWSFLOW_KAFKA_BOOTSTRAP=127.0.0.1:<port> "
                        "(the controller uses port+1, or NEWSFLOW_BROKER_CONTROLLER_PORT)"
                    )
            java = find_java()
            libs = ensure_jars(self.settings)
            self._write_properties()
            self._format_storage(java, libs)
            pid = self._spawn(java, libs)
        self._wait_ready(pid)
        return self.status()

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker this data directory started; True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)
        if pid_alive(pid):
            log.warning("broker %s did not stop within %.0fs; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    # -- internals ----------------------------------------------------------------------------
    def _write_properties(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": str(self.settings.topics.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
        }
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format_storage(self, java: str, libs: Path) -> None:
        if (self.log_dirs / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [
            java,
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",  # one argument: a random id may start with a dash
            "-c",
            str(self.properties),
            "--ignore-formatted",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"formatting Kafka storage in {self.log_dirs} failed: {result.stderr.strip()[-400:]}; "
                f"remove {self.home} to start from scratch"
            )

    def _spawn(self, java: str, libs: Path) -> int:
        cmd = [
            java,
            f"-Xmx{self.settings.broker.heap}",
            f"-Xms{self.settings.broker.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.properties),
        ]
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        self.pid_file.write_text(str(proc.pid))
        log.info("started Kafka broker pid %s at %s (log %s)", proc.pid, self.bootstrap, self.log_file)
        return proc.pid

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.settings.broker.start_timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                tail = _tail(self.log_file, 5)
                raise BrokerError(f"the Kafka broker exited during start-up; last log lines:\n{tail}")
            if broker_answers(self.bootstrap, timeout_s=1.0):
                return
            time.sleep(0.25)
        raise BrokerError(
            f"the Kafka broker (pid {pid}) did not answer at {self.bootstrap} within "
            f"{self.settings.broker.start_timeout_s:.0f}s; see {self.log_file}"
        )


@contextlib.contextmanager
def throwaway_broker(data_dir: Path, heap: str = "512m") -> Iterator[str]:
    """A broker on free loopback ports with its data in ``data_dir``, stopped on exit (tests, benchmarks)."""
    settings = Settings().with_overrides(
        **{
            "data_dir": data_dir,
            "kafka.bootstrap": f"127.0.0.1:{free_port()}",
            "broker.controller_port": free_port(),
            "broker.heap": heap,
        }
    )
    broker = LocalBroker(settings)
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as dead; another user's process as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (we started it in this process and it died) still answers kill(0).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
