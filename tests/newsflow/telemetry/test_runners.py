"""Which runners run the pipeline's DoFns in this process (what the live endpoint can see)."""

import pytest

from newsflow.telemetry.runners import workers_in_process


@pytest.mark.parametrize(
    ("args", "here"),
    [
        (["--runner=FnApiRunner"], True),
        (["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"], True),
        (["--runner=FnApiRunner", "--direct_running_mode=multi_processing"], False),
        (["--runner=PrismRunner"], True),
        (["--runner=PrismRunner", "--environment_type=LOOPBACK"], True),
        (["--runner=PrismRunner", "--experiments=use_loopback_process_worker"], False),
        (["--runner=PrismRunner", "--environment_type=PROCESS"], False),
        (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], False),
        (["--runner=FlinkRunner"], False),
        (["--runner=DataflowRunner"], False),
    ],
)
def test_workers_in_process(args, here):
    assert workers_in_process(args) is here
