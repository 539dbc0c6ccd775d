"""Which Beam runner runs the enrich pipeline, and the pipeline options for it.

``newsflow enrich --runner fnapi|prism|flink|dataflow`` (``NEWSFLOW_BEAM_RUNNER``); extra Beam
options come from ``NEWSFLOW_BEAM_OPTIONS`` and the command line, in that order:

- ``fnapi`` (default): Beam's FnApiRunner, in this process. One machine.
- ``prism``: Beam's portable Prism runner, built into ``.cache/prism/bin/prism`` by ``make prism``
  (``NEWSFLOW_BEAM_PRISM_LOCATION`` elsewhere). newsflow starts it as a job server of its own and
  runs the workers as separate processes (a PROCESS environment: :mod:`pipelines.worker`). Prism
  and its workers die with the run (``PR_SET_PDEATHSIG``), so a killed run leaves nothing reading.
- ``flink``: Beam's FlinkRunner; pass ``--flink_master`` and, for the worker environment, e.g.
  ``--environment_type=PROCESS --environment_config='{"command": "/path/to/newsflow-worker"}'``.
- ``dataflow``: Beam's DataflowRunner; pass ``--project``, ``--region``, ``--temp_location`` and
  the package (``--setup_file`` or a custom container).

See docs/SCALING.md for what each runner does with bundle finalization, splits and drains, and the
exact commands. :data:`MULTI_HOST` names the runners whose workers may run on other hosts: the
pipeline refuses a host-local sink (the file sink) there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from newsflow.broker import free_port
from newsflow.config import REPO_ROOT, BeamSettings
from newsflow.errors import ConfigError, SetupError

log = logging.getLogger(__name__)

RUNNERS = ("fnapi", "prism", "flink", "dataflow")
MULTI_HOST = frozenset({"flink", "dataflow"})
BEAM_RUNNER = {
    "fnapi": "FnApiRunner",
    "prism": "PortableRunner",
    "flink": "FlinkRunner",
    "dataflow": "DataflowRunner",
}
PRISM_START_S = 30.0


def beam_args(beam: BeamSettings, extra: list[str] | None = None) -> list[str]:
    """The Beam options a user gave: ``NEWSFLOW_BEAM_OPTIONS`` then the command line's extras."""
    args = [*shlex.split(beam.options), *(extra or [])]
    for arg in args:
        if arg == "--runner" or arg.startswith("--runner="):
            raise ConfigError(
                f"pick the runner with newsflow's --runner ({'|'.join(RUNNERS)}) or NEWSFLOW_BEAM_RUNNER, "
                f"not the Beam option {arg!r}"
            )
    return args


def _given(args: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


@contextlib.contextmanager
def pipeline_options(
    beam: BeamSettings, extra: list[str] | None, streaming: bool, log_dir: Path
) -> Iterator[PipelineOptions]:
    """The options for one run on the configured runner; starts (and stops) Prism for ``prism``."""
    args = beam_args(beam, extra)
    args.append(f"--runner={BEAM_RUNNER[beam.runner]}")
    if streaming:
        args.append("--streaming")
    if beam.runner != "prism":
        yield PipelineOptions(args)
        return
    with PrismServer(beam.prism_location, log_dir) as endpoint, tempfile.TemporaryDirectory() as tmp:
        args.append(f"--job_endpoint={endpoint}")
        if not _given(args, "environment_type"):
            args += [
                "--environment_type=PROCESS",
                f"--environment_config={json.dumps(process_environment(Path(tmp)))}",
            ]
        yield PipelineOptions(args)


def process_environment(folder: Path) -> dict[str, object]:
    """A PROCESS environment that starts :mod:`pipelines.worker` with this Python and this code."""
    launcher = folder / "newsflow-worker"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pipelines.worker "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    path = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {"command": str(launcher), "env": {"PYTHONPATH": path}}


class PrismServer:
    """Prism as a job server of this run: started on a free port, stopped (with its workers) after it."""

    def __init__(self, location: Path, log_dir: Path) -> None:
        self.location = location
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        if not self.location.exists():
            raise SetupError(
                f"the Prism runner is not built at {self.location}; run 'make prism' (Go and the Go "
                "module proxy, 1-3 minutes) or set NEWSFLOW_BEAM_PRISM_LOCATION"
            )
        port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / "prism.log"
        cmd = [
            str(self.location),
            f"--job_port={port}",
            "--serve_http=false",
            "--log_level=warn",
            "--log_kind=text",
        ]
        from pipelines.worker import die_with_parent

        with open(log_file, "ab") as out:
            # A session of its own: a terminal's Ctrl-C reaches the driver, which stops the job
            # cleanly, not Prism directly; PR_SET_PDEATHSIG: Prism dies with the driver.
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + PRISM_START_S
        while True:
            if self.proc.poll() is not None:
                raise SetupError(
                    f"Prism exited during start-up (code {self.proc.returncode}); see {log_file}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                self.__exit__()
                raise SetupError(
                    f"Prism did not listen on port {port} within {PRISM_START_S:.0f}s; see {log_file}"
                )
            time.sleep(0.1)
        log.info("Prism job server %s on localhost:%s (log %s)", self.location, port, log_file)
        return f"localhost:{port}"

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
