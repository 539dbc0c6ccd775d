"""RSS/Atom connector: fetch feeds over HTTP, parse with feedparser, normalise, dedupe, produce to Kafka."""
