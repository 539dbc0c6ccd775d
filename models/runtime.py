"""Where the encoder and the stance pair model run (torch or ONNX Runtime) and at which precision.

Settings: ``NEWSFLOW_MODELS_RUNTIME`` (``auto``/``onnx``/``torch``), ``NEWSFLOW_MODELS_PRECISION``
(``auto``/``fp32``/``bf16``/``int8``), ``NEWSFLOW_MODELS_THREADS``. :func:`build_runner` turns a loaded
transformers model into a :class:`Runner`, a callable from a tokenised batch (numpy) to the model's
output (``last_hidden_state`` or ``logits``, float32):

- **torch**: the model as loaded, fp32, bf16 autocast (``bf16``) or dynamically quantised (``int8``);
  on CUDA when torch sees a GPU (``auto`` then always picks torch, in fp16 autocast).
- **onnx**: the model exported to ONNX, fused for ONNX Runtime (:mod:`models.onnx_export`) and cached
  under ``.cache/onnx/<kind>-<key>/``, where the key hashes the weights as loaded (a retrained stance
  artifact or another encoder gets its own export), the export recipe and the library versions. A
  fresh export is checked against torch on real text (the bundled ``models/data/topics_extra.jsonl``
  items) before it is used: embeddings' cosine >= 0.9999, identical pair-model labels. ``bf16`` has
  no ONNX Runtime CPU path.
- **auto** (the default): the candidates are timed on this machine once, on real text, and the
  fastest is used; the decision is cached per machine (CPU model and flags, threads, library
  versions) and model key in ``.cache/onnx/decisions.json``, logged, and named in the records'
  lineage (a choice measured while the load average exceeded the CPU count is measured again at the
  next start). ``precision=auto`` considers fp32 on both runtimes, torch bf16 where the CPU has native
  bf16, and ONNX Runtime int8 only where :mod:`models.runtime_check` recorded, for this model and
  this CPU's family of int8 kernels (VNNI, AVX2, ...), that int8 keeps the stance and topic quality
  within 0.005 of fp32 on the dev sets (committed in ``models/artifacts/int8-quality.json`` or
  measured on this machine). It never picks a
  setting that measured slower here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from models.onnx_export import EXPORT_VERSION, export_model, fuse_model, input_names, quantize_model
from newsflow.config import REPO_ROOT
from newsflow.errors import ModelError

log = logging.getLogger(__name__)

Kind = Literal["encoder", "pair"]
OUTPUT: dict[str, str] = {"encoder": "last_hidden_state", "pair": "logits"}
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "onnx"
VERIFY_DATA = Path(__file__).resolve().parent / "data" / "topics_extra.jsonl"
#: int8 verdicts measured for the committed models, per family of int8 kernels (``make check-runtime``).
PUBLISHED_QUALITY = Path(__file__).resolve().parent / "artifacts" / "int8-quality.json"
#: Cosine between the ONNX and the torch embedding of every verification text, at least.
MIN_COSINE = 0.9999
#: An int8 graph whose embeddings drift below this from fp32 is broken, not just imprecise.
MIN_COSINE_INT8 = 0.8
#: int8 may be chosen by ``auto`` only when the quality check measured at most this loss on the dev sets.
QUALITY_TOLERANCE = 0.005
#: Nodes kept in fp32 by the int8 recipe (a suffix of the node name matches); see docs/BENCHMARKS.md.
INT8_EXCLUDE: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    """A runtime and precision pair, e.g. ``onnx-fp32``."""

    runtime: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.precision}"


# ----------------------------------------------------------------------------------------------------------
# torch precisions
# ----------------------------------------------------------------------------------------------------------


def native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AMX tiles or AVX512-BF16)."""
    cpu = torch.cpu
    return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())


def precision_context(precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``bf16``, and for ``auto`` where the CPU has native bf16; else nothing."""
    use_bf16 = precision == "bf16" or (precision == "auto" and native_bf16())
    return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def prepare_model(model: Any, precision: str) -> Any:
    """The model as it will run: with ``int8``, its linear layers dynamically quantised to int8.

    Dynamic quantisation (int8 weights, activations quantised per batch) ran MiniLM's forward pass
    about 1.4x faster than fp32 on a CPU without native bf16 (the whole model layer 1.24x) and
    costs stance quality (docs/BENCHMARKS.md); the other precisions use the model as loaded (fp32 weights,
    bf16 by autocast at run time, see :func:`precision_context`).
    """
    if precision != "int8":
        return model
    import warnings

    with warnings.catch_warnings():  # torch deprecates eager quantisation in favour of torchao
        warnings.simplefilter("ignore")
        try:
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        except (RuntimeError, NotImplementedError) as exc:
            raise ModelError(
                f"int8 quantisation is not available here ({str(exc).splitlines()[0]}); "
                "set NEWSFLOW_MODELS_PRECISION=fp32 or auto"
            ) from exc


# ----------------------------------------------------------------------------------------------------------
# Runners
# ----------------------------------------------------------------------------------------------------------


class Runner:
    """A model's forward pass on a tokenised batch: ``runner(batch) -> float32 array``.

    ``batch`` maps input names (``input_ids``, ``attention_mask``, ``token_type_ids``) to int64 arrays,
    as a tokenizer returns them with ``return_tensors="np"``; extra inputs are ignored.
    """

    choice: Choice
    reason: str = ""
    #: :func:`weights_key` of the model (empty where it was not needed: an explicit torch choice).
    key: str = ""

    @property
    def name(self) -> str:
        return self.choice.name

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, model: Any, kind: Kind, precision: str, device: str = "cpu") -> None:
        self.choice = Choice("torch", precision)
        self.kind = kind
        self.device = device
        if device == "cpu":
            self.model = prepare_model(model, precision)
        elif precision == "int8":
            raise ModelError("int8 runs on the CPU only; set NEWSFLOW_MODELS_PRECISION to auto, fp32 or bf16")
        else:  # CUDA: untested here (no GPU was lent to this work)
            self.model = model.to(device)

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        if self.device == "cpu":
            return precision_context(self.choice.precision)
        if self.choice.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.choice.precision == "bf16" else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}
        with self._context():
            out = self.model(**inputs)
        tensor = out.last_hidden_state if self.kind == "encoder" else out.logits
        return tensor.float().cpu().numpy()


class OnnxRunner(Runner):
    def __init__(self, path: Path, precision: str, threads: int) -> None:
        import onnxruntime as ort

        self.choice = Choice("onnx", precision)
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no arena: a batch's activations go back to the C heap (and, above glibc's fixed mmap
        # threshold, to the OS: newsflow.memory) instead of staying reserved at their peak
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types for unreadable graphs
            raise ModelError(
                f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}; delete {path.parent} to "
                "re-export it, or set NEWSFLOW_MODELS_RUNTIME=torch"
            ) from exc
        self._names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in self._names}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# Keys: the model's weights, the machine
# ----------------------------------------------------------------------------------------------------------


def weights_key(model: Any, kind: Kind) -> str:
    """A hash of the weights as loaded, the export recipe and the library versions (16 hex digits)."""
    import onnxruntime as ort

    digest = hashlib.sha256()
    digest.update(f"{kind}|{EXPORT_VERSION}|{torch.__version__}|{ort.__version__}".encode())
    digest.update(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpu() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return model, flags


def cpu_description() -> str:
    """The CPU model and the flags that matter for these kernels, e.g. ``Intel Xeon [avx2 avx512f ...]``."""
    model, flags = _cpu()
    return f"{model} [{' '.join(f for f in _CPU_FLAGS if f in flags)}]"


def int8_kernels() -> str:
    """The family of int8 kernels ONNX Runtime runs on this CPU (their rounding differs between families,
    so an int8 quality verdict holds for one family): ``amx``, ``avx512-vnni``, ``avx-vnni``, ``avx512``,
    ``avx2`` or ``generic``."""
    flags = _cpu()[1]
    for flag, family in (
        ("amx_int8", "amx"),
        ("avx512_vnni", "avx512-vnni"),
        ("avx_vnni", "avx-vnni"),
        ("avx512bw", "avx512"),
        ("avx2", "avx2"),
    ):
        if flag in flags:
            return family
    return "generic"


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_key(threads: int) -> str:
    """Decisions are valid for this CPU kind, this many threads and these library versions."""
    import onnxruntime as ort

    text = f"{cpu_description()}|threads={threads}|torch={torch.__version__}|ort={ort.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# The cache: exported graphs, decisions, quality records
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created): one process exports or writes at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=1, sort_keys=True)
    os.replace(tmp.name, path)


def update_json(path: Path, key: str, value: Any) -> None:
    """Set ``key`` in the JSON object at ``path`` (read, update, atomic replace, under a lock)."""
    with _locked(DEFAULT_CACHE_DIR / f"{path.name}.lock"):  # locks live in the cache, not beside the file
        data = _read_json(path)
        data[key] = value
        _write_json(path, data)


def verification_texts(limit: int = 48) -> tuple[list[str], list[tuple[str, str]]]:
    """Real text for checking an export: short items, ~128-token ones, and (title, text) pairs."""
    items = []
    try:
        with open(VERIFY_DATA, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                items.append((str(row.get("title", "")), str(row.get("text", ""))))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the verification texts {VERIFY_DATA}: {exc}") from exc
    items = [(t, x) for t, x in items if t and x][: limit * 2]
    long_texts = [" ".join(x for _, x in items[i : i + 4]) for i in range(0, len(items), 4)]
    texts = [t for t, _ in items[:limit]] + [x for _, x in items[:limit]] + long_texts
    pairs = [(items[i][0], long_texts[(i // 4) % len(long_texts)]) for i in range(len(items))]
    pairs += [(items[i][0], items[(i + 7) % len(items)][1]) for i in range(limit)]
    return texts, pairs


def _tokenise(tokenizer: Any, kind: Kind, inputs: Sequence[Any], max_length: int) -> dict[str, np.ndarray]:
    if kind == "encoder":
        return dict(
            tokenizer(list(inputs), padding=True, truncation=True, max_length=max_length, return_tensors="np")
        )
    claims, bodies = [c for c, _ in inputs], [b for _, b in inputs]
    return dict(
        tokenizer(
            claims,
            bodies,
            padding=True,
            truncation="longest_first",
            max_length=max_length,
            return_tensors="np",
        )
    )


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the unmasked tokens, L2-normalised: (batch, seq, dim) -> (batch, dim)."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def compare(
    reference: Runner, candidate: Runner, tokenizer: Any, kind: Kind, max_length: int
) -> dict[str, float]:
    """How far ``candidate``'s outputs are from ``reference``'s on the verification text.

    Encoder: min and mean cosine of the pooled embeddings. Pair model: share of identical argmax labels
    and the largest probability difference.
    """
    texts, pairs = verification_texts()
    inputs: Sequence[Any] = texts if kind == "encoder" else pairs
    cosines, same, prob_diff = [], [], []
    for start in range(0, len(inputs), 32):
        batch = _tokenise(tokenizer, kind, inputs[start : start + 32], max_length)
        want, got = reference(batch), candidate(batch)
        if kind == "encoder":
            a, b = mean_pool(want, batch["attention_mask"]), mean_pool(got, batch["attention_mask"])
            cosines.extend((a * b).sum(axis=1).tolist())
        else:
            pa, pb = _softmax(want), _softmax(got)
            same.extend((pa.argmax(1) == pb.argmax(1)).tolist())
            prob_diff.append(float(np.abs(pa - pb).max()))
    if kind == "encoder":
        return {
            "min_cosine": float(min(cosines)),
            "mean_cosine": float(np.mean(cosines)),
            "texts": len(inputs),
        }
    return {"same_label": float(np.mean(same)), "max_prob_diff": max(prob_diff), "pairs": len(inputs)}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _passes(kind: Kind, precision: str, check: Mapping[str, float]) -> bool:
    if precision == "int8":  # judged on the dev sets by models.runtime_check; here: not broken
        return kind == "pair" or check["min_cosine"] >= MIN_COSINE_INT8
    if kind == "encoder":
        return check["min_cosine"] >= MIN_COSINE
    return check["same_label"] == 1.0


def onnx_model_path(
    model: Any,
    tokenizer: Any,
    kind: Kind,
    precision: str,
    name: str,
    cache_dir: Path,
    max_length: int,
    key: str,
) -> Path:
    """The verified ONNX graph for this model and precision, exporting it on first use (cached).

    Raises:
        ModelError: The export failed, or its outputs differ from torch's on the verification text.
    """
    folder = cache_dir / f"{kind}-{key}"
    target = folder / f"{precision}.onnx"
    meta_path = folder / "meta.json"
    with _locked(folder / "export.lock"):
        meta = _read_json(meta_path)
        check = meta.get("checks", {}).get(precision)
        if target.exists() and check is not None:
            if not check.get("passed"):
                raise ModelError(_failed_message(kind, name, precision, check, folder))
            return target
        started = time.perf_counter()
        log.warning(
            "exporting the %s %s to ONNX (%s) under %s: once per model and machine, about a minute",
            kind,
            name,
            precision,
            folder,
        )
        fp32 = folder / "fp32.onnx"
        if not fp32.exists():
            with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
                raw = Path(tmp) / "raw.onnx"
                export_model(model, tokenizer, OUTPUT[kind], raw)
                fused_tmp = Path(tmp) / "fused.onnx"
                meta["fusions"] = fuse_model(raw, fused_tmp, model.config)
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(fused_tmp, fp32)
        if precision == "int8":
            with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
                quantised = Path(tmp) / "int8.onnx"
                quantize_model(fp32, quantised, _int8_exclusions(fp32))
                os.replace(quantised, target)
        reference = TorchRunner(model, kind, "fp32")
        check = compare(
            reference, OnnxRunner(target, precision, available_threads()), tokenizer, kind, max_length
        )
        check["passed"] = _passes(kind, precision, check)
        meta.update(
            {"name": name, "kind": kind, "inputs": input_names(tokenizer), "export_version": EXPORT_VERSION}
        )
        meta.setdefault("checks", {})[precision] = check
        _write_json(meta_path, meta)
        log.warning(
            "ONNX %s %s (%s) exported in %.0fs; against torch fp32: %s",
            kind,
            name,
            precision,
            time.perf_counter() - started,
            ", ".join(f"{k} {v:.5f}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items()),
        )
        if not check["passed"]:
            raise ModelError(_failed_message(kind, name, precision, check, folder))
        return target


def _int8_exclusions(fp32: Path) -> list[str]:
    from models.onnx_export import matmul_nodes

    return [n for n in matmul_nodes(fp32) if any(n.endswith(suffix) for suffix in INT8_EXCLUDE)]


def _failed_message(kind: str, name: str, precision: str, check: Mapping[str, Any], folder: Path) -> str:
    return (
        f"the ONNX export of the {kind} {name} ({precision}) does not match torch on real text "
        f"({dict(check)}); set NEWSFLOW_MODELS_RUNTIME=torch (or delete {folder} to export it again)"
    )


# ----------------------------------------------------------------------------------------------------------
# Choosing
# ----------------------------------------------------------------------------------------------------------


def _quality_prefix() -> str:
    import onnxruntime as ort

    return f"{int8_kernels()}|ort={ort.__version__}:"


def quality_records(cache_dir: Path | None = None) -> dict[str, Any]:
    """The int8 verdicts of :mod:`models.runtime_check` for this CPU's int8 kernels, by ``<kind>-<key>``:
    the committed ones (:data:`PUBLISHED_QUALITY`) and this machine's (``quality.json`` in the cache)."""
    prefix = _quality_prefix()
    out: dict[str, Any] = {}
    for path in (PUBLISHED_QUALITY, Path(cache_dir or DEFAULT_CACHE_DIR) / "quality.json"):
        data = _read_json(path)
        out |= {key[len(prefix) :]: value for key, value in data.items() if key.startswith(prefix)}
    return out


def record_quality(kind: Kind, key: str, record: dict[str, Any], path: Path | None = None) -> None:
    """Record an int8 verdict for this CPU's int8 kernels in ``path`` (default: this machine's cache)."""
    update_json(path or DEFAULT_CACHE_DIR / "quality.json", f"{_quality_prefix()}{kind}-{key}", record)


def int8_quality_passed(kind: Kind, key: str, cache_dir: Path | None = None) -> bool:
    """Whether :mod:`models.runtime_check` found, for this model and CPU kind, that int8 keeps the quality."""
    record = quality_records(cache_dir).get(f"{kind}-{key}")
    return bool(record and record.get("passed"))


def candidates(runtime: str, precision: str, *, int8_ok: bool) -> list[Choice]:
    """What ``auto`` chooses among for these settings (in preference order on a tie)."""
    if runtime not in ("auto", "onnx", "torch"):
        raise ModelError(f"unknown runtime {runtime!r}; expected auto, onnx or torch")
    if precision == "bf16" and runtime == "onnx":
        raise ModelError(
            "ONNX Runtime has no bf16 path on CPU; set NEWSFLOW_MODELS_PRECISION to auto, fp32 or int8, "
            "or NEWSFLOW_MODELS_RUNTIME=torch"
        )
    runtimes = ["onnx", "torch"] if runtime == "auto" else [runtime]
    if precision != "auto":
        return [Choice(r, precision) for r in runtimes if not (r == "onnx" and precision == "bf16")]
    out = []
    for r in runtimes:
        out.append(Choice(r, "fp32"))
        if r == "onnx" and int8_ok:
            out.append(Choice(r, "int8"))
        if r == "torch" and native_bf16():
            out.append(Choice(r, "bf16"))
    return out


def timing_batches(
    tokenizer: Any, kind: Kind, max_length: int, batch_size: int
) -> list[dict[str, np.ndarray]]:
    """Real text at the lengths the layer runs: ~128-token batches and, for the encoder, a title batch."""
    texts, pairs = verification_texts()
    if kind == "pair":
        return [_tokenise(tokenizer, kind, pairs[:batch_size], max_length)]
    titles, longs = texts[:batch_size], [t for t in texts if len(t) > 400][:batch_size]
    return [_tokenise(tokenizer, kind, longs, max_length), _tokenise(tokenizer, kind, titles, max_length)]


def measure(
    runners: Sequence[Runner], batches: Sequence[Mapping[str, np.ndarray]], rounds: int = 3
) -> dict[str, float]:
    """Sequences per second of each runner: best of ``rounds`` interleaved rounds (a busy machine
    slows every candidate alike within a round)."""
    for runner in runners:  # warm-up: first-call allocations, ONNX Runtime's kernel choices
        runner(batches[0])
    sequences = sum(len(b["input_ids"]) for b in batches)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for runner in runners:
            started = time.perf_counter()
            for batch in batches:
                runner(batch)
            rate = sequences / (time.perf_counter() - started)
            best[runner.name] = max(best.get(runner.name, 0.0), rate)
    return best


def build_runner(
    model: Any,
    tokenizer: Any,
    kind: Kind,
    *,
    name: str,
    runtime: str = "auto",
    precision: str = "auto",
    threads: int = 0,
    max_length: int = 128,
    batch_size: int = 32,
    cache_dir: Path | None = None,
) -> Runner:
    """The fastest verified way to run ``model`` here among what the settings allow (see the module doc).

    Args:
        model: The transformers model, fp32, as loaded (the export source and the torch path).
        tokenizer: Its tokenizer.
        kind: ``"encoder"`` (returns ``last_hidden_state``) or ``"pair"`` (returns ``logits``).
        name: The model's name for logs and messages.
        runtime: ``auto``, ``onnx`` or ``torch``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8``.
        threads: Intra-op threads (0 = the CPUs this process may use).
        max_length: Input length the checks and timings use.
        batch_size: Batch size the timings use.
        cache_dir: Where exports and decisions are kept (default ``.cache/onnx`` in the repository).

    Raises:
        ModelError: An explicitly requested runtime or precision cannot run this model here.
    """
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    threads = threads or available_threads()
    if runtime == "auto" and torch.cuda.is_available():
        precision = "fp16" if precision == "auto" else precision
        runner: Runner = TorchRunner(model, kind, precision, device="cuda")
        runner.reason = "CUDA is available"
        return runner
    if runtime == "torch" and precision != "auto":
        runner = TorchRunner(model, kind, precision)
        runner.reason = "set by NEWSFLOW_MODELS_RUNTIME/PRECISION"
        return runner
    key = weights_key(model, kind)
    options = candidates(runtime, precision, int8_ok=int8_quality_passed(kind, key, cache_dir))
    factories: dict[str, Callable[[], Runner]] = {}
    for choice in options:
        factories[choice.name] = _factory(
            choice, model, tokenizer, kind, name, cache_dir, max_length, key, threads
        )
    if len(options) == 1:
        runner = factories[options[0].name]()
        runner.reason, runner.key = "the only candidate for these settings", key
        return runner
    decisions = cache_dir / "decisions.json"
    # the key names the candidates: a newly offered one (an int8 verdict that passed) is measured too
    decision_key = f"{machine_key(threads)}:{kind}-{key}:{','.join(c.name for c in options)}"
    decided = _read_json(decisions).get(decision_key)
    if decided and not decided.get("quiet", True):
        log.warning(
            "the cached runtime choice for the %s was measured on a busy machine: measuring again", name
        )
        decided = None
    if decided and decided.get("choice") in factories:
        try:
            runner = factories[decided["choice"]]()
        except ModelError as exc:
            log.warning("cached runtime choice %s failed (%s); measuring again", decided["choice"], exc)
        else:
            runner.reason = (
                f"measured on this machine {decided.get('when', '')}: {_rates_text(decided['rates'])}"
            )
            runner.key = key
            return runner
    runners: list[Runner] = []
    for choice in options:
        try:
            runners.append(factories[choice.name]())
        except ModelError as exc:
            if runtime == "onnx":
                raise
            log.warning("%s is not available for the %s: %s", choice.name, name, exc)
    if not runners:
        raise ModelError(f"no runtime could run the {kind} {name}")
    rates = measure(runners, timing_batches(tokenizer, kind, max_length, batch_size))
    chosen = max(runners, key=lambda r: rates[r.name])
    load = os.getloadavg()[0]
    record = {"choice": chosen.name, "rates": rates, "cpu": cpu_description(), "threads": threads}
    # on a machine busier than its CPUs the timings are noise: use the choice, measure again next start
    record |= {
        "when": time.strftime("%Y-%m-%d"),
        "load": round(load, 1),
        "quiet": load <= (os.cpu_count() or 1),
    }
    update_json(decisions, decision_key, record)
    chosen.reason, chosen.key = f"measured now: {_rates_text(rates)}", key
    log.warning("runtime for the %s %s: %s (%s)", kind, name, chosen.name, chosen.reason)
    return chosen


def release_weights(model: Any) -> None:
    """Free a torch model's weights once ONNX Runtime runs it (its config and structure stay: the
    module moves to the ``meta`` device). About 90 MB per MiniLM."""
    model.to("meta")


def _rates_text(rates: Mapping[str, float]) -> str:
    return ", ".join(
        f"{name} {rate:.0f} seq/s" for name, rate in sorted(rates.items(), key=lambda kv: -kv[1])
    )


def _factory(
    choice: Choice,
    model: Any,
    tokenizer: Any,
    kind: Kind,
    name: str,
    cache_dir: Path,
    max_length: int,
    key: str,
    threads: int,
) -> Callable[[], Runner]:
    if choice.runtime == "torch":
        return lambda: TorchRunner(model, kind, choice.precision)

    def onnx() -> Runner:
        path = onnx_model_path(model, tokenizer, kind, choice.precision, name, cache_dir, max_length, key)
        return OnnxRunner(path, choice.precision, threads)

    return onnx


def main() -> int:
    """``python -m models.runtime`` (``make models-runtime``, part of ``make setup``): export, check and
    time the configured encoder and stance pair model now rather than on the pipeline's first start."""
    from models.enricher import Enricher
    from newsflow.config import Settings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    enricher = Enricher(settings.models, settings.taxonomy_file)
    print(f"{cpu_description()}, {settings.models.threads or available_threads()} threads")
    print(f"encoder: {enricher.encoder.runner.name} ({enricher.encoder.runner.reason})")
    if enricher.stance.runner is not None:
        print(f"stance pair model: {enricher.stance.runner.name} ({enricher.stance.runner.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
