"""Store tests run against the same real hub as the hub tests (SQLite, or PostgreSQL when marked)."""

from tests.hub.conftest import hub, pg_hub, pg_url, upload

__all__ = ["hub", "pg_hub", "pg_url", "upload"]
