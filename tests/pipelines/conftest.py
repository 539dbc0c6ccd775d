"""Fixtures for the pipeline tests: the session's PostgreSQL server (tests/fixtures_pg.py)."""

from tests.fixtures_pg import postgres_dsn  # noqa: F401 - a fixture, shared with tests/connectors
