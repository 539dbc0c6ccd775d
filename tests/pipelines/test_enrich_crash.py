"""Stopping an enrich process: kill -9 mid-run then a restart loses nothing; SIGTERM stops it in time.

Both run on FnApiRunner and on Prism (``beam_runner``), through the real CLI in a subprocess.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors import kafka as kafka_clients
from newsflow.records import Article, Enriched, content_hash, decode, encode

pytestmark = pytest.mark.integration

N = 120


def _descendants(pid):
    """Pids of every process below ``pid`` (Prism and its workers for the prism runner)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _env(settings, runner, **extra):
    return {
        **os.environ,
        "NEWSFLOW_DATA_DIR": str(settings.data_dir),
        "NEWSFLOW_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "NEWSFLOW_KAFKA_GROUP_ID": settings.kafka.group_id,
        "NEWSFLOW_TOPICS_RAW": settings.topics.raw,
        "NEWSFLOW_TOPICS_ENRICHED": settings.topics.enriched,
        "NEWSFLOW_TOPICS_DLQ": settings.topics.dlq,
        "NEWSFLOW_BEAM_RUNNER": runner,
        **extra,
    }


def _article(i):
    return Article(
        id=f"{i:032x}",
        feed_url="http://feeds.test/c.rss",
        title=f"Story {i} about Idlib airstrikes",
        summary=f"Item {i}: rescuers said shelling continued.",
        fetched_at="2026-11-01T00:00:00Z",
        content_hash=content_hash(str(i)),
    )


def test_sigterm_stops_a_stream_within_30s_with_every_written_record_committed(kafka_settings, beam_runner):
    """Articles keep arriving; SIGTERM: the run ends in time, exit 0, and every partition's committed
    offset is exactly one past the last record written from it (nothing written is left uncommitted,
    nothing uncommitted was written); a restart then enriches the rest."""
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics)
    env = _env(kafka_settings, beam_runner, NEWSFLOW_KAFKA_BUNDLE_RECORDS="10")
    cmd = [sys.executable, "-m", "newsflow", "enrich", "--mode", "stream"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    producer = kafka_clients.producer(kafka_settings.kafka)
    consumer = kafka_clients.consumer(kafka_settings.kafka, group_id=None)
    consumer.subscribe([kafka_settings.topics.enriched])
    sent, seen = 0, 0
    try:
        deadline = time.monotonic() + 240
        while seen < 20 and time.monotonic() < deadline and proc.poll() is None:
            for _ in range(5 if sent < 100 else 0):  # a steady flow, also while the signal is handled
                producer.send(
                    kafka_settings.topics.raw, key=f"{sent:032x}".encode(), value=encode(_article(sent))
                )
                sent += 1
            seen += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        assert proc.poll() is None and seen >= 20, "the stream did not get going"
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while proc.poll() is None and time.monotonic() - signalled < 40:
            if sent < 120:
                producer.send(
                    kafka_settings.topics.raw, key=f"{sent:032x}".encode(), value=encode(_article(sent))
                )
                sent += 1
            time.sleep(0.05)
        took = time.monotonic() - signalled
        output = proc.stdout.read() if proc.poll() is not None else ""
    finally:
        producer.flush()
        producer.close()
        consumer.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and took < 30, (proc.returncode, took, output[-3000:])
    print(f"{beam_runner}: stopped {took:.1f}s after SIGTERM")

    written: dict[int, int] = {}
    for message in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.enriched):
        _topic, partition, offset = dict(message.headers)["newsflow-source"].decode().split("/")
        written[int(partition)] = max(int(offset), written.get(int(partition), -1))
    committed = kafka_clients.committed_offsets(
        kafka_settings.kafka, kafka_settings.kafka.group_id, kafka_settings.topics.raw
    )
    assert {p: committed[p] for p in written} == {p: o + 1 for p, o in written.items()}

    done = subprocess.run([*cmd[:-2], "batch"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = {
        decode(Enriched, r.value).id
        for r in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.enriched)
    }
    assert ids == {f"{i:032x}" for i in range(sent)}


def test_kill_minus_nine_mid_run_then_restart_loses_nothing(kafka_settings, tmp_path, beam_runner):
    """On Prism too: Prism and its worker processes die with the killed driver (nothing keeps reading)."""
    kafka_clients.ensure_topics(kafka_settings.kafka, kafka_settings.topics)
    producer = kafka_clients.producer(kafka_settings.kafka)
    ids = []
    for i in range(N):
        article = _article(i)
        ids.append(article.id)
        producer.send(kafka_settings.topics.raw, key=article.id.encode(), value=encode(article))
    producer.flush()
    producer.close()
    env = _env(kafka_settings, beam_runner, NEWSFLOW_KAFKA_BUNDLE_RECORDS="10")
    cmd = [sys.executable, "-m", "newsflow", "enrich"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    consumer = kafka_clients.consumer(kafka_settings.kafka, group_id=None)
    consumer.subscribe([kafka_settings.topics.enriched])
    try:
        deadline = time.monotonic() + 180
        seen = 0
        while seen == 0 and time.monotonic() < deadline and proc.poll() is None:
            seen += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        assert proc.poll() is None, "the run finished before it could be killed"
        assert seen > 0
        below = _descendants(proc.pid)
        if beam_runner == "prism":
            assert len(below) >= 2, below  # Prism and at least one worker process
    finally:
        consumer.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while [p for p in below if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in below if Path(f"/proc/{p}").exists()], "processes outlived the killed run"
    partial = kafka_clients.committed_offsets(
        kafka_settings.kafka, kafka_settings.kafka.group_id, kafka_settings.topics.raw
    )
    assert sum(v or 0 for v in partial.values()) < N  # killed mid-run

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    enriched = [
        decode(Enriched, r.value).id
        for r in kafka_clients.read_all(kafka_settings.kafka, kafka_settings.topics.enriched)
    ]
    assert set(enriched) == set(ids)  # no loss
    # Duplicates only of records the killed attempt wrote past its commits, and the restart counted
    # exactly those (the commits' metadata says where to look).
    duplicates = len(enriched) - len(set(enriched))
    said = re.search(
        rf"rewritten after an unfinished attempt: {re.escape(kafka_settings.topics.enriched)} (\d+)",
        " ".join(done.stdout.split()),  # the console wraps long lines
    )
    assert (int(said[1]) if said else 0) == duplicates, done.stdout[-1500:]
    print(f"{beam_runner}: {duplicates} duplicates in Kafka after kill -9, counted by the restart")
    committed = kafka_clients.committed_offsets(
        kafka_settings.kafka, kafka_settings.kafka.group_id, kafka_settings.topics.raw
    )
    assert committed == kafka_clients.end_offsets(kafka_settings.kafka, kafka_settings.topics.raw)
