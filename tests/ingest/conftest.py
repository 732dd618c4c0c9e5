"""Ingest tests run against the real hub of tests/hub (its fixtures, shared rather than copied)."""

from tests.hub.conftest import hub, upload

__all__ = ["hub", "upload"]
