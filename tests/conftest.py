"""Shared fixtures: one real Kafka broker per test session, unique topics per test.

The broker is the one named by ``NEWSFLOW_KAFKA_BOOTSTRAP`` when that is set; otherwise the
session starts its own KRaft broker (Maven Central jars, ``newsflow.broker.LocalBroker``) on a free
loopback port with a temporary data directory, and stops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from newsflow.broker import throwaway_broker
from newsflow.config import REPO_ROOT, Settings

SHARED_DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker for the whole session."""
    external = os.environ.get("NEWSFLOW_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with throwaway_broker(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings_factory(tmp_path: Path, unique: str):
    """Settings with a temporary data dir and unique topics and group (broker given separately)."""

    def make(bootstrap: str = "127.0.0.1:9", **overrides: object) -> Settings:
        base = Settings().with_overrides(
            **{
                "data_dir": tmp_path / "data",
                "kafka.bootstrap": bootstrap,
                "kafka.group_id": f"newsflow-test-{unique}",
                "topics.raw": f"test.{unique}.raw",
                "topics.enriched": f"test.{unique}.enriched",
                "topics.dlq": f"test.{unique}.dlq",
                "topics.feed_health": f"test.{unique}.health",
                "demo_port": 0,
            }
        )
        return base.with_overrides(**overrides) if overrides else base

    return make


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, settings_factory) -> Settings:
    return settings_factory(kafka_bootstrap)


@pytest.fixture(params=["fnapi", "prism"])
def beam_runner(request: pytest.FixtureRequest) -> str:
    """The Beam runners the Kafka IO and enrich tests run on: in-process, and Prism (workers in processes)."""
    if request.param == "prism" and not Settings().beam.prism_location.exists():
        pytest.skip(f"the Prism runner is not built at {Settings().beam.prism_location}: run 'make prism'")
    return str(request.param)
