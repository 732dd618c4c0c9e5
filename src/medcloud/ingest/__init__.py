"""Ingest: sniff the format, validate, extract metadata, store the blob, index it. Idempotent."""
