"""The Beam SDK worker that a portable runner starts for newsflow's pipelines (a PROCESS environment).

Prism, and the Flink and Spark job servers, start an environment's ``command`` as
``<command> --id=<worker id> --provision_endpoint=<host:port>`` (the SDK container's contract): the
worker asks the runner's provision service for its control and logging endpoints and the pipeline
options, then serves bundles until the runner stops it. Beam's Python container does that with a
Go ``boot`` program; this module is that boot for a machine where newsflow is installed, so the
workers run in processes of their own (not threads of the driver, as in Beam's LOOPBACK mode).

Every worker scrubs secrets from its log lines and quiets kafka-python's reconnect noise, like the
CLI, and dies with the runner process that started it (Linux ``PR_SET_PDEATHSIG``): a kill -9 of a
run never leaves workers behind that keep reading and committing.

Run it as ``python -m pipelines.worker --id=ID --provision_endpoint=HOST:PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import tempfile

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_environment(worker_id: str, provision_endpoint: str) -> dict[str, str]:
    """The environment variables Beam's ``sdk_worker_main`` reads, from the runner's provision service."""
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
    from google.protobuf import json_format, text_format

    with grpc.insecure_channel(provision_endpoint) as channel:
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        request = beam_provision_api_pb2.GetProvisionInfoRequest()
        info = stub.GetProvisionInfo(request, metadata=[("worker_id", worker_id)], timeout=60).info
    env = {
        "WORKER_ID": worker_id,
        "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(info.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(info.logging_endpoint),
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
        "SEMI_PERSISTENT_DIRECTORY": tempfile.mkdtemp(prefix="newsflow-worker-"),
    }
    if info.HasField("status_endpoint"):
        env["STATUS_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(info.status_endpoint)
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", required=True, help="the worker id the runner gave")
    parser.add_argument("--provision_endpoint", required=True, help="the runner's provision service")
    args, _ = parser.parse_known_args(argv)  # other container-contract flags are not needed
    die_with_parent()
    worker_id = args.id.strip("'\"")  # Prism quotes it: --id='worker-1'
    os.environ.update(worker_environment(worker_id, args.provision_endpoint))

    from apache_beam.runners.worker import sdk_worker_main

    import connectors.kafka  # noqa: F401 - quiets kafka-python's reconnect noise in this process
    from newsflow import scrub

    scrub.install()
    sdk_worker_main.main([])


if __name__ == "__main__":
    main()
