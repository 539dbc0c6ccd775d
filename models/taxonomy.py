"""The topic taxonomy and the claims that stance is measured against, loaded from YAML.

Adding a topic, a claim or a language is a change to configuration only::

    version: 1
    anchors_dir: anchors     # per-language anchor terms, relative to this file (models/anchors.py)
    topics:
      - id: syria_conflict
        description: "..."
        examples: ["...", "..."]
        threshold: 0.6       # optional: a fixed decision threshold for this topic
        label: "the war in Syria"   # optional, zero-shot backend: the phrase in the hypothesis template
        anchors:             # optional: a Boolean query over term groups, in every language
          match: [[syria, context]]
          none: [not_conflict]
      - id: other            # the catch-all; assigned when no watched topic passes its threshold
        description: "..."
        examples: ["..."]
    claims:
      - id: raqqa-destroyed-by-coalition
        topic: syria_conflict
        text: "The U.S.-led coalition destroyed most of Raqqa during the campaign against ISIS."

and each ``anchors/<language>.yaml`` holds that language's terms per topic and group::

    language: ar
    syria_conflict:
      syria: [سوريا, دمشق, حلب]
      context: [...]

The loaded :class:`Taxonomy` holds the terms of every language (``anchor_terms``), so it is
self-contained: it can be shipped to workers without the files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from newsflow.errors import ConfigError

OTHER = "other"


class Topic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = Field(min_length=1)
    examples: list[str] = []
    threshold: float | None = Field(
        None,
        description="optional fixed decision threshold; otherwise the trained/calibrated one (0.5 for the "
        "zero-shot and classifier backends)",
    )
    label: str | None = Field(
        None,
        min_length=1,
        description="zero-shot backend: a short phrase for the hypothesis template; default: the id "
        "with spaces for underscores",
    )
    hypothesis: str | None = Field(
        None, min_length=3, description="zero-shot backend: the whole hypothesis, instead of the template"
    )
    anchors: AnchorSpec | None = Field(None, description="a multilingual anchor query (models/anchors.py)")

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # optional fields are left out while unset, so existing taxonomies keep their fingerprint
        data: dict[str, Any] = handler(self)
        for key in ("label", "hypothesis", "anchors"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class AnchorSpec(BaseModel):
    """A topic's anchor queries over its term groups (see :mod:`models.anchors`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: list[list[str]] = Field(
        min_length=1,
        description="clauses, any of which decides alone (languages no model covers); a clause needs a "
        "term of each of its groups",
    )
    none: list[str] = Field([], description="groups whose terms veto `match`")
    gate: list[list[str]] | None = Field(
        None,
        description="clauses a model's label for this topic must satisfy (precision); default: `match`; "
        "[] for no gate",
    )
    score: float = Field(
        0.8,
        gt=0,
        le=1,
        description="the score of a label the anchors alone decided: their measured precision (model card)",
    )

    @model_validator(mode="after")
    def _check(self) -> AnchorSpec:
        if any(not clause for clause in [*self.match, *(self.gate or [])]):
            raise ValueError("an anchors clause needs at least one group")
        return self


class Claim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    text: str = Field(min_length=3)
    topic: str | None = None


class Taxonomy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    anchors_dir: str | None = Field(
        None, description="folder of per-language anchor files, relative to the taxonomy file"
    )
    topics: list[Topic]
    claims: list[Claim] = []
    anchor_terms: dict[str, dict[str, dict[str, list[str]]]] = Field(
        {}, description="topic -> group -> language -> terms (filled from anchors_dir by load_taxonomy)"
    )

    @model_validator(mode="after")
    def _check(self) -> Taxonomy:
        ids = [t.id for t in self.topics]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate topic ids in {ids}")
        if OTHER not in ids:
            raise ValueError(f"the taxonomy needs an '{OTHER}' topic (the catch-all)")
        if len(ids) < 2:
            raise ValueError("the taxonomy needs at least one watched topic besides 'other'")
        claim_ids = [c.id for c in self.claims]
        if len(set(claim_ids)) != len(claim_ids):
            raise ValueError("duplicate claim ids")
        for claim in self.claims:
            if claim.topic is not None and claim.topic not in ids:
                raise ValueError(f"claim {claim.id!r} names unknown topic {claim.topic!r}")
        for topic_id in self.anchor_terms:
            if topic_id not in ids:
                raise ValueError(f"anchor terms name unknown topic {topic_id!r}")
        for topic in self.topics:
            if topic.anchors is None:
                continue
            groups = self.anchor_terms.get(topic.id, {})
            spec = topic.anchors
            used = {g for clause in [*spec.match, *(spec.gate or [])] for g in clause} | set(spec.none)
            empty = sorted(g for g in used if not any(groups.get(g, {}).values()))
            if empty:
                raise ValueError(
                    f"topic {topic.id!r}: anchor groups {empty} have no terms in any language; add them to "
                    "an anchors file (anchors_dir) or drop them from the query"
                )
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_anchors(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # taxonomies without anchors keep the fingerprint they had before anchors existed
        data: dict[str, Any] = handler(self)
        for key in ("anchors_dir", "anchor_terms"):
            if not data.get(key):
                data.pop(key, None)
        return data

    @property
    def anchor_languages(self) -> list[str]:
        """Languages with anchor terms, sorted."""
        return sorted(
            {lang for groups in self.anchor_terms.values() for terms in groups.values() for lang in terms}
        )

    @property
    def watched(self) -> list[Topic]:
        """Topics other than the catch-all, in file order."""
        return [t for t in self.topics if t.id != OTHER]

    @property
    def labels(self) -> list[str]:
        return [t.id for t in self.topics]

    def topic(self, topic_id: str) -> Topic:
        for topic in self.topics:
            if topic.id == topic_id:
                return topic
        raise KeyError(topic_id)

    def fingerprint(self) -> str:
        """A short hash of the taxonomy's content (topics, examples, claims, anchor terms): part of model
        lineage. Where the anchor files lie (``anchors_dir``) is not content."""
        return hashlib.sha256(self.model_dump_json(exclude={"anchors_dir"}).encode()).hexdigest()[:12]


def load_taxonomy(path: Path | str) -> Taxonomy:
    """Read a taxonomy file and the anchor files of its ``anchors_dir``; errors say what to fix."""
    path = Path(path)
    data = _read_yaml(path, "taxonomy file", "set NEWSFLOW_TAXONOMY_FILE")
    if isinstance(data, dict) and data.get("anchors_dir"):
        folder = path.resolve().parent / str(data["anchors_dir"])  # beside the file a link points to
        if not folder.is_dir():
            raise ConfigError(f"taxonomy file {path}: anchors_dir {folder} is not a folder")
        terms = data.setdefault("anchor_terms", {})
        for file in sorted(folder.glob("*.yaml")):
            _merge_anchor_file(terms, file)
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"taxonomy file {path}: {where}: {first['msg']}") from exc


def _read_yaml(path: Path, what: str, hint: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} not found; {hint}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


def _merge_anchor_file(terms: dict[str, Any], file: Path) -> None:
    """Add one ``<language>.yaml`` anchor file to ``terms`` (topic -> group -> language -> terms)."""
    data = _read_yaml(file, "anchor file", "check the taxonomy's anchors_dir")
    if not isinstance(data, dict) or not isinstance(data.get("language"), str):
        raise ConfigError(f"anchor file {file}: expected a mapping with 'language: <ISO 639-1 code>'")
    language = data["language"]
    for topic_id, groups in data.items():
        if topic_id == "language":
            continue
        if not isinstance(groups, dict):
            raise ConfigError(f"anchor file {file}: {topic_id} must map group names to lists of terms")
        for group, words in groups.items():
            if not isinstance(words, list) or not all(isinstance(w, str | int) for w in words):
                raise ConfigError(f"anchor file {file}: {topic_id}.{group} must be a list of terms")
            by_language = terms.setdefault(topic_id, {}).setdefault(group, {})
            by_language[language] = [*by_language.get(language, []), *(str(w) for w in words)]
