# newsflow — `make run` and `make test` set everything up on a fresh machine.
# Every target below with a `##` comment is listed by `make help`.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
KAFKA_LIBS ?= .cache/kafka/libs
SETUP_STAMP := $(VENV)/.newsflow-setup
KAFKA_STAMP := $(KAFKA_LIBS)/.resolved
PRISM_VERSION := v2.77.0
PRISM_BIN := .cache/prism/bin
PRISM_STAMP := $(PRISM_BIN)/.prism-$(PRISM_VERSION)
SHARED_DATA ?= ../shared/data
TOPIC ?= news.enriched

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export NEWSFLOW_BROKER_LIBS_DIR := $(abspath $(KAFKA_LIBS))
export NEWSFLOW_BEAM_PRISM_LOCATION := $(abspath $(PRISM_BIN))/prism

.DEFAULT_GOAL := help
.PHONY: help setup prism kafka-jars kafka-up kafka-down kafka-status run test test-fast lint format schemas consume \
        train-stance train-topics eval-stance eval-topics bench-kafka bench-models bench-e2e bench-report \
        bench-ingest bench-pages bench-runners soak browser report models-runtime check-runtime clean distclean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(SETUP_STAMP) kafka-jars models-runtime ## create the virtualenv, install newsflow[dev], resolve the Kafka jars, export the models

models-runtime: $(SETUP_STAMP) ## export the models to ONNX (cached in .cache/onnx) and time the runtimes on this machine
	$(PY) -m models.runtime

check-runtime: $(SETUP_STAMP) ## ONNX fp32/int8 vs torch fp32 on the stance and topic dev sets; records whether int8 may be used here
	$(PY) -m models.runtime_check

$(SETUP_STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

prism: $(PRISM_STAMP) ## build Beam's Prism runner ($(PRISM_VERSION), pinned) into .cache/prism from the Go module proxy

$(PRISM_STAMP):
	@command -v go >/dev/null || { echo "error: Go 1.21+ is needed to build the Prism runner; install it (https://go.dev/dl, or apt-get install golang)"; exit 1; }
	@mkdir -p $(PRISM_BIN)
	GOBIN=$(abspath $(PRISM_BIN)) go install github.com/apache/beam/sdks/v2/go/cmd/prism@$(PRISM_VERSION) \
	  || { echo "error: could not build Prism from the Go module proxy; check that it is reachable (GOPROXY)"; exit 1; }
	@touch $@

kafka-jars: $(KAFKA_STAMP) ## resolve Apache Kafka 4.x and its classpath from Maven Central (cached)

$(KAFKA_STAMP): infra/kafka/pom.xml
	@command -v java >/dev/null || { echo "error: Java 17+ is needed for the Kafka broker; install a JDK (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: Maven is needed to resolve the Kafka jars; install it (apt-get install maven)"; exit 1; }
	@mkdir -p $(KAFKA_LIBS)
	mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath $(KAFKA_LIBS)) -DincludeScope=runtime \
	  || { echo "error: could not resolve the Kafka jars from Maven Central; check that the registry is reachable"; exit 1; }
	@touch $@

kafka-up: setup ## start the local Kafka broker on 127.0.0.1:9092 (NEWSFLOW_KAFKA_BOOTSTRAP)
	$(BIN)/newsflow kafka up

kafka-down: ## stop the local Kafka broker
	@test -x $(BIN)/newsflow && $(BIN)/newsflow kafka down || true

kafka-status: setup ## is the local broker running?
	$(BIN)/newsflow kafka status

run: setup ## set up if needed, start Kafka if none answers, run the offline demo, write its report
	$(BIN)/newsflow demo

report: setup ## write the HTML report of the last 7 days (SINCE=all, OUT=.newsflow/report)
	$(BIN)/newsflow report --output $(or $(OUT),.newsflow/report) --since $(or $(SINCE),7d)

browser: ## install Debian's chromium when missing (the report's browser test opens the page in it)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "error: chromium is missing and this user cannot install it; run: apt-get install chromium"; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	    || { echo "error: could not install chromium with apt-get; install Debian's chromium package"; exit 1; }; }

test: setup prism browser ## set up if needed and run the whole test suite (starts its own broker; Kafka IO and enrich on FnApiRunner and Prism)
	$(BIN)/pytest

test-fast: setup ## unit tests only (no broker)
	$(BIN)/pytest -m "not integration"

lint: setup ## ruff, mypy, and the JSON Schemas up to date with the record models
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(PY) -m schemas.generate --check

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: setup ## regenerate schemas/*.json from the record models (newsflow/records.py)
	$(PY) -m schemas.generate

consume: kafka-jars ## read a topic with Kafka's own console consumer (TOPIC=news.enriched)
	java -cp '$(KAFKA_LIBS)/*' org.apache.kafka.tools.consumer.ConsoleConsumer \
	  --bootstrap-server $${NEWSFLOW_KAFKA_BOOTSTRAP:-127.0.0.1:9092} --topic $(TOPIC) --from-beginning \
	  --property print.key=true --timeout-ms 5000

clean: ## remove local state (.newsflow) after stopping the broker
	-$(MAKE) kafka-down
	rm -rf .newsflow .pytest_cache .mypy_cache .ruff_cache

distclean: clean ## also remove the virtualenv and the Kafka jar cache
	rm -rf $(VENV) .cache

train-topics: setup ## retrain the topic head (dev set, our own short items, the hand-labelled flood), writes models/artifacts/topic-head
	$(BIN)/newsflow train topics --data $(SHARED_DATA)/topics/dev.jsonl --extra models/data/topics_extra.jsonl \
	  --flood-fnc $(SHARED_DATA)/fnc1/train_stances.csv \
	  --flood $(SHARED_DATA)/flood/items.jsonl --flood-labels models/data/flood_labels.jsonl \
	  --output models/artifacts/topic-head

eval-topics: setup ## score the topic model on the dev set and on the flood (in-sample for the committed head; see its card)
	$(BIN)/newsflow eval topics --data $(SHARED_DATA)/topics/dev.jsonl \
	  --flood $(SHARED_DATA)/flood/items.jsonl --flood-labels models/data/flood_labels.jsonl $(EVAL_ARGS)

bench-kafka: setup ## Kafka -> identity -> Kafka: newsflow's Beam IO vs a plain kafka-python loop (100k msgs)
	$(PY) -m bench.bench_kafka_io --messages 100000

bench-models: setup ## topic + stance model layer (default runtime, torch fp32, ONNX int8) vs a naive loop, ceilings, label check
	$(PY) -m bench.bench_models --articles 1000

bench-report: setup ## the report for 10,000 enriched records (target: under 10 s on 2 cores)
	$(PY) -m bench.bench_report --records 10000

bench-ingest: setup ## 1,000 feeds on 50 loopback hosts through the Ingestor vs a plain httpx + feedparser loop
	$(PY) -m bench.bench_ingest

bench-pages: setup ## article pages: extraction speed and token F1, and one per-host budget shared by polls and pages
	$(PY) -m bench.bench_pages

soak: setup prism ## 20,000 real-length articles: a bounded run, then a stream with a broker restart; lost/duplicates per sink (SOAK_ARGS='--runner prism')
	flock /tmp/newsflow-heavy.lock nice -n 10 $(PY) -m bench.soak $(SOAK_ARGS)

bench-runners: setup prism ## FnApiRunner vs Prism in one run: batch throughput and stream p95 latency at the same rate (RUNNERS_ARGS='--articles 2000')
	flock /tmp/newsflow-heavy.lock nice -n 10 $(PY) -m bench.bench_runners $(RUNNERS_ARGS)

bench-e2e: setup ## stream mode end to end with the real models: 300 s at 20/s + a 2,000 burst (E2E_ARGS='--seconds 60 --rate 5')
	$(PY) -m bench.bench_e2e $(E2E_ARGS)

train-stance: setup ## fine-tune the stance cross-encoder on FNC-1 (~30 min on 2 idle cores), writes models/artifacts/stance-minilm
	$(BIN)/newsflow train stance --stances $(SHARED_DATA)/fnc1/train_stances.csv --bodies $(SHARED_DATA)/fnc1/train_bodies.csv \
	  --output models/artifacts/stance-minilm

eval-stance: setup ## score the stance model on FNC-1 files (STANCES=..., BODIES=...; default: the training split, in-sample)
	$(BIN)/newsflow eval stance --stances $(or $(STANCES),$(SHARED_DATA)/fnc1/train_stances.csv) \
	  --bodies $(or $(BODIES),$(SHARED_DATA)/fnc1/train_bodies.csv)
