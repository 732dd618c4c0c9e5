"""`medcloud demo` (being written)."""

from __future__ import annotations


def demo_command() -> None:
    """Run the platform with sample data."""
    raise NotImplementedError
