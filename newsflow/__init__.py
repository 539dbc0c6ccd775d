"""newsflow: RSS/Atom feeds -> Apache Kafka -> Apache Beam topic and stance enrichment -> sinks."""

__version__ = "0.1.0"
