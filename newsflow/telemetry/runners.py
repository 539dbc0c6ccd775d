"""Whether a Beam runner runs the pipeline's workers (its DoFns) inside the ``newsflow`` process.

That decides what the live endpoint can see (:mod:`newsflow.telemetry.instruments`): hooks in the
DoFns record into this process's metrics only when the workers run here.

- FnApiRunner / DirectRunner: in this process (threads), unless ``--direct_running_mode
  multi_processing`` starts worker processes;
- PrismRunner / PortableRunner with a LOOPBACK environment (Prism's default): the SDK worker runs in
  a thread of this process, unless the ``use_loopback_process_worker`` experiment is on;
- anything else (``--environment_type PROCESS|DOCKER|EXTERNAL``, Flink, Spark, Dataflow): elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

IN_PROCESS_RUNNERS = {"fnapirunner", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner"}
PORTABLE_RUNNERS = {"prismrunner", "portablerunner"}


def workers_in_process(beam_args: Sequence[str]) -> bool:
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        DirectOptions,
        PipelineOptions,
        PortableOptions,
        StandardOptions,
    )

    options = PipelineOptions(list(beam_args))
    runner = str(options.view_as(StandardOptions).runner or "FnApiRunner").rsplit(".", 1)[-1].lower()
    if runner in IN_PROCESS_RUNNERS:
        return options.view_as(DirectOptions).direct_running_mode != "multi_processing"
    if runner in PORTABLE_RUNNERS:
        environment = (options.view_as(PortableOptions).environment_type or "").upper()
        if runner == "prismrunner" and not environment:
            environment = "LOOPBACK"
        process_worker = options.view_as(DebugOptions).lookup_experiment("use_loopback_process_worker", False)
        return environment == "LOOPBACK" and not process_worker
    return False
