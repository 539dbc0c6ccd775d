"""Apache Beam pipelines: ``pipelines.enrich`` turns ``news.raw`` into ``news.enriched``."""
