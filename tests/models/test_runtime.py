"""The model runtime: ONNX export, fusion and checks against torch, the export cache keyed by the weights,
the measured choice and its cache, int8, and the encoder and the stance pair model on ONNX Runtime.

Tiny randomly initialised BERT models built here (no Hub, no downloads), saved as full transformers
model directories: the runtime must work for any model the settings name, not only the packaged ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import runtime
from models.encoder import Encoder, default_encoder_path
from models.runtime import Choice, OnnxRunner, TorchRunner, build_runner, candidates, weights_key
from models.stance import StanceModel
from newsflow.errors import ModelError

TEXTS = [
    "Security forces open fire on protesters in Daraa after Friday prayers",
    "The central bank kept its benchmark rate unchanged on Thursday, citing inflation.",
    "",
    "Envoys met for a third day in Geneva; no agreement was announced. " * 6,
]


def _config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        **extra,
    )


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_encoder_path()))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    from transformers import BertModel

    path = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(1)
    BertModel(_config()).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    from transformers import BertForSequenceClassification

    labels = {0: "agree", 1: "disagree", 2: "discuss"}
    path = tmp_path_factory.mktemp("tiny-pair")
    torch.manual_seed(2)
    config = _config(id2label=labels, label2id={v: k for k, v in labels.items()})
    BertForSequenceClassification(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh export cache per test (the encoder and stance model use the default location)."""
    monkeypatch.setattr(runtime, "DEFAULT_CACHE_DIR", tmp_path / "onnx")
    return tmp_path / "onnx"


def test_candidates_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    names = [c.name for c in candidates("auto", "auto", int8_ok=False)]
    assert names == ["onnx-fp32", "torch-fp32", "torch-bf16"]
    assert [c.name for c in candidates("auto", "auto", int8_ok=True)][:2] == ["onnx-fp32", "onnx-int8"]
    assert [c.name for c in candidates("onnx", "int8", int8_ok=False)] == ["onnx-int8"]
    assert [c.name for c in candidates("auto", "bf16", int8_ok=True)] == ["torch-bf16"]
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    assert "torch-bf16" not in [c.name for c in candidates("torch", "auto", int8_ok=True)]
    with pytest.raises(ModelError, match="no bf16 path"):
        candidates("onnx", "bf16", int8_ok=False)
    with pytest.raises(ModelError, match="unknown runtime"):
        candidates("tensorrt", "auto", int8_ok=False)


def test_encoder_on_onnx_matches_torch(encoder_dir: Path, cache: Path) -> None:
    on_torch = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="torch")
    on_onnx = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="onnx")
    assert on_onnx.runner.name == "onnx-fp32" and on_torch.runner.name == "torch-fp32"
    a, b = on_torch.encode(TEXTS), on_onnx.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 32)
    assert np.min((a * b).sum(axis=1)) >= 0.9999
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert on_onnx.label == on_torch.label  # fp32 on either runtime: the same embeddings, the same lineage
    assert on_onnx.runner.key and len(on_onnx.runner.key) == 16
    assert next(on_onnx.model.parameters()).device.type == "meta"  # torch's copy of the weights freed
    assert next(on_torch.model.parameters()).device.type == "cpu"
    folders = list(cache.glob("encoder-*"))
    assert len(folders) == 1
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["checks"]["fp32"]["passed"] and meta["checks"]["fp32"]["min_cosine"] >= 0.9999
    assert meta["fusions"].get("Attention") == 2  # ONNX Runtime's transformer fusions applied


def test_export_is_cached_by_weights(encoder_dir: Path, cache: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoder_dir)).eval()
    key = weights_key(model, "encoder")
    Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="onnx")
    graph = cache / f"encoder-{key}" / "fp32.onnx"
    stamp = graph.stat().st_mtime_ns
    Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="onnx")
    assert graph.stat().st_mtime_ns == stamp  # reused, not exported again
    with torch.no_grad():
        model.pooler.dense.bias.add_(0.01)  # "retrained": other weights, another key, a fresh export
    assert weights_key(model, "encoder") != key
    assert weights_key(model, "pair") != weights_key(model, "encoder")


def test_a_failed_check_is_an_error_that_says_what_to_do(
    encoder_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "MIN_COSINE", 1.01)  # no export can pass
    with pytest.raises(ModelError, match="NEWSFLOW_MODELS_RUNTIME=torch"):
        Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="onnx")
    with pytest.raises(ModelError, match="does not match torch"):  # the recorded verdict stands
        Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="onnx")
    # auto falls back to what does work, torch
    auto = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="auto")
    assert auto.runner.name == "torch-fp32"


def test_auto_measures_once_and_caches_the_choice(
    encoder_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.5, 0.5, 0.5))  # a quiet machine
    first = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="auto")
    assert first.runner.name in ("onnx-fp32", "torch-fp32")
    assert first.runner.reason.startswith("measured now")
    decisions = json.loads((cache / "decisions.json").read_text())
    (record,) = decisions.values()
    assert record["choice"] == first.runner.name
    assert set(record["rates"]) == {"onnx-fp32", "torch-fp32"}
    assert record["rates"][record["choice"]] == max(record["rates"].values())  # never the slower one

    def no_measuring(*args: Any, **kwargs: Any) -> dict[str, float]:
        raise AssertionError("measured again")

    monkeypatch.setattr(runtime, "measure", no_measuring)
    again = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="auto")
    assert again.runner.name == first.runner.name
    assert again.runner.reason.startswith("measured on this machine")


def test_a_choice_made_on_a_busy_machine_is_measured_again(
    encoder_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def torch_is_faster(runners: Any, batches: Any, rounds: int = 3) -> dict[str, float]:
        calls.append(len(runners))
        return {r.name: (9.0 if r.name == "torch-fp32" else 3.0) for r in runners}

    monkeypatch.setattr(runtime, "measure", torch_is_faster)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    busy = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="auto")
    assert busy.runner.name == "torch-fp32"  # the faster one, even when measured on a busy machine
    (record,) = json.loads((cache / "decisions.json").read_text()).values()
    assert record["quiet"] is False
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="auto")
    assert len(calls) == 2  # measured again, now on a quiet machine
    (record,) = json.loads((cache / "decisions.json").read_text()).values()
    assert record["quiet"] is True


def test_measure_reports_every_runner(encoder_dir: Path, tokenizer: Any) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoder_dir)).eval()
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="np"))
    rates = runtime.measure([TorchRunner(model, "encoder", "fp32")], [batch], rounds=2)
    assert list(rates) == ["torch-fp32"] and rates["torch-fp32"] > 0


def test_pair_model_on_onnx_gives_torch_labels(encoder_dir: Path, pair_dir: Path, cache: Path) -> None:
    encoder = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="torch")
    pairs = [
        ("Russia interfered in the election", "Officials said Russia interfered. Moscow denied it. " * 5),
        ("The ceasefire holds", "Shelling resumed overnight, residents said."),
        ("Storm closes ports", ""),
    ]
    options: dict[str, Any] = {"related_threshold": 0.0, "precision": "fp32", "max_tokens": 64}
    on_torch = StanceModel(encoder, str(pair_dir), runtime="torch", **options)
    on_onnx = StanceModel(encoder, str(pair_dir), runtime="onnx", **options)
    assert on_onnx.runner is not None and on_onnx.runner.name == "onnx-fp32"
    evidence = [(c, b or " ") for c, b in pairs]
    assert np.allclose(on_torch.pair_probabilities(evidence), on_onnx.pair_probabilities(evidence), atol=1e-4)
    want, got = on_torch.predict(pairs), on_onnx.predict(pairs)
    assert [label for label, _ in got] == [label for label, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-4)
    assert on_onnx.lineage == on_torch.lineage
    assert len(list(cache.glob("pair-*"))) == 1


def test_int8_runs_and_is_marked(encoder_dir: Path, pair_dir: Path, cache: Path, tokenizer: Any) -> None:
    encoder = Encoder(str(encoder_dir), max_tokens=64, precision="int8", runtime="onnx")
    assert encoder.runner.name == "onnx-int8"
    assert encoder.label.endswith("+int8")  # int8 embeddings differ from fp32's: lineage says so
    reference = Encoder(str(encoder_dir), max_tokens=64, precision="fp32", runtime="torch")
    cosines = (encoder.encode(TEXTS) * reference.encode(TEXTS)).sum(axis=1)
    assert cosines.min() >= runtime.MIN_COSINE_INT8
    stance = StanceModel(reference, str(pair_dir), runtime="onnx", precision="int8", related_threshold=0.0)
    assert stance.lineage["stance"].endswith("+int8")
    ((label, _),) = stance.predict([("A claim", "A body about the claim.")])
    assert label in ("agree", "disagree", "discuss")


def test_int8_is_offered_to_auto_only_after_the_quality_check(
    encoder_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoder_dir)).eval()
    key = weights_key(model, "encoder")
    seen: list[str] = []

    def fastest_is_int8(runners: Any, batches: Any, rounds: int = 3) -> dict[str, float]:
        seen.extend(r.name for r in runners)
        return {r.name: (100.0 if r.name == "onnx-int8" else 10.0 + len(r.name)) for r in runners}

    monkeypatch.setattr(runtime, "measure", fastest_is_int8)
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(runtime, "PUBLISHED_QUALITY", cache / "published.json")
    before = Encoder(str(encoder_dir), max_tokens=64, precision="auto", runtime="auto")
    assert sorted(seen) == ["onnx-fp32", "torch-fp32"] and before.precision == "fp32"  # no verdict: no int8
    assert not runtime.int8_quality_passed("encoder", key)
    runtime.record_quality(
        "encoder", key, {"passed": False, "when": "then", "results": {}}, cache / "published.json"
    )
    assert not runtime.int8_quality_passed("encoder", key)
    runtime.record_quality("encoder", key, {"passed": True, "when": "now", "results": {}})
    assert runtime.int8_quality_passed("encoder", key)  # this machine's verdict overrides the published one
    assert runtime.quality_records()[f"encoder-{key}"]["when"] == "now"
    runtime_int8_kernels = runtime.int8_kernels
    monkeypatch.setattr(runtime, "int8_kernels", lambda: "avx2")  # another CPU kind: no verdict there
    assert not runtime.int8_quality_passed("encoder", key)
    monkeypatch.setattr(runtime, "int8_kernels", runtime_int8_kernels)
    seen.clear()
    # the verdict offers a new candidate: the cached choice (made without it) is measured again
    encoder = Encoder(str(encoder_dir), max_tokens=64, precision="auto", runtime="auto")
    assert sorted(seen) == ["onnx-fp32", "onnx-int8", "torch-fp32"]
    assert encoder.runner.name == "onnx-int8" and encoder.precision == "int8"


def test_onnx_runner_rejects_a_broken_graph(tmp_path: Path) -> None:
    broken = tmp_path / "fp32.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="delete"):
        OnnxRunner(broken, "fp32", 1)


def test_build_runner_explicit_torch_needs_no_export(encoder_dir: Path, tokenizer: Any, cache: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoder_dir)).eval()
    runner = build_runner(model, tokenizer, "encoder", name="tiny", runtime="torch", precision="fp32")
    assert runner.choice == Choice("torch", "fp32")
    assert not cache.exists()
