"""Kafka → identity → Kafka: newsflow's Beam Kafka IO against a plain kafka-python loop.

Run: ``.venv/bin/python -m bench.bench_kafka_io [--messages 100000]`` (``make bench-kafka``).
Both sides read the same topic (4 partitions) and write to their own output topic on the same
broker, in one run: the plain loop consumes with a consumer group and produces with the same
producer settings (acks=all, idempotent, gzip), flushing and committing once per poll batch, like
the IO. The ratio printed is IO rate / plain-loop rate (target ≥ 0.5).
"""

from __future__ import annotations

import argparse
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from kafka.structs import OffsetAndMetadata

from bench.common import bench_broker, table
from connectors import kafka as kafka_clients
from connectors.beam_kafka import ReadFromKafka, StartPosition, WriteToKafka, plan_partitions
from newsflow.config import Settings


def _fill(settings: Settings, topic: str, n: int) -> None:
    producer = kafka_clients.producer(settings.kafka, linger_ms=20, batch_size=256 * 1024)
    payload = b'{"id":"%08d","title":"a small message of about a hundred bytes for the benchmark run"}'
    for i in range(n):
        producer.send(topic, key=b"%08d" % i, value=payload % i)
    producer.flush()
    producer.close()


def plain_loop(settings: Settings, src: str, dst: str, n: int) -> float:
    consumer = kafka_clients.consumer(
        settings.kafka, group_id=f"plain-{uuid.uuid4().hex[:6]}", max_poll_records=2000
    )
    producer = kafka_clients.producer(settings.kafka)
    consumer.subscribe([src])
    start = time.perf_counter()
    done = 0
    while done < n:
        batches = consumer.poll(timeout_ms=500)
        offsets = {}
        for tp, records in batches.items():
            for record in records:
                producer.send(dst, key=record.key, value=record.value)
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            done += len(records)
        if offsets:
            producer.flush()
            consumer.commit(offsets)
    elapsed = time.perf_counter() - start
    consumer.close()
    producer.close()
    return elapsed


def beam_io(settings: Settings, src: str, dst: str, workers: int) -> float:
    group = f"beam-{uuid.uuid4().hex[:6]}"
    slices = plan_partitions(settings.kafka, src, group, StartPosition(), bounded=True)
    args = ["--runner=FnApiRunner"]
    if workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        (
            p
            | "ReadRaw"
            >> ReadFromKafka(
                settings.kafka, group, slices, max_records_per_bundle=0 if workers > 1 else 5_000
            )
            | "Identity" >> beam.Map(lambda r: (r.key, r.value))
            | "Write" >> WriteToKafka(settings.kafka, dst)
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with bench_broker() as bootstrap:
        tag = uuid.uuid4().hex[:6]
        settings = Settings().with_overrides(**{"kafka.bootstrap": bootstrap, "topics.partitions": 4})
        src = f"bench.{tag}.in"
        outs = {name: f"bench.{tag}.{name}" for name in ("plain", "beam1", "beam2")}
        kafka_clients.ensure_topics(settings.kafka, settings.topics, [src, *outs.values()])
        print(f"producing {args.messages:,} messages to {src} (4 partitions) on {bootstrap} ...")
        _fill(settings, src, args.messages)
        results = {
            "plain kafka-python loop": plain_loop(settings, src, outs["plain"], args.messages),
            "newsflow Beam IO, 1 worker": beam_io(settings, src, outs["beam1"], 1),
            "newsflow Beam IO, 2 workers": beam_io(settings, src, outs["beam2"], 2),
        }
        for name, topic in outs.items():
            got = sum(kafka_clients.end_offsets(settings.kafka, topic).values())
            assert got >= args.messages, f"{name} wrote {got} of {args.messages}"
        base = args.messages / results["plain kafka-python loop"]
        rows = [
            (name, f"{secs:.1f}", f"{args.messages / secs:,.0f}", f"{(args.messages / secs) / base:.2f}")
            for name, secs in results.items()
        ]
        print(table(rows, ("pipeline", "seconds", "msgs/s", "ratio to plain loop")))


if __name__ == "__main__":
    main()
