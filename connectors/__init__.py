"""Connectors: where articles come from (RSS/Atom feeds) and go to (Kafka, files)."""
