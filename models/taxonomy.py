"""The topic taxonomy and the claims that stance is measured against, loaded from YAML.

Adding a topic or a claim is a change to the YAML file only::

    version: 1
    topics:
      - id: syria_conflict
        description: "..."
        examples: ["...", "..."]
        threshold: 0.6       # optional: a fixed decision threshold for this topic
        label: "the war in Syria"   # optional, zero-shot backend: the phrase in the hypothesis template
      - id: other            # the catch-all; assigned when no watched topic passes its threshold
        description: "..."
        examples: ["..."]
    claims:
      - id: raqqa-destroyed-by-coalition
        topic: syria_conflict
        text: "The U.S.-led coalition destroyed most of Raqqa during the campaign against ISIS."
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

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # label and hypothesis are left out while unset, so existing taxonomies keep their fingerprint
        data: dict[str, Any] = handler(self)
        for key in ("label", "hypothesis"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Claim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    text: str = Field(min_length=3)
    topic: str | None = None


class Taxonomy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    topics: list[Topic]
    claims: list[Claim] = []

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
        return self

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
        """A short hash of the taxonomy's content (topics, examples, claims): part of model lineage."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def load_taxonomy(path: Path | str) -> Taxonomy:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"taxonomy file {path} not found; set NEWSFLOW_TAXONOMY_FILE") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"taxonomy file {path} is not valid YAML: {exc}") from exc
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"taxonomy file {path}: {where}: {first['msg']}") from exc
