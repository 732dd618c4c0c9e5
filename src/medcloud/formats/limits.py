"""Bounds on what a client's file may make the readers do. Kept apart from `formats.dicom` so that code
which only needs a limit (the CLI, the de-identifier's signature) does not import pydicom to get it."""

# Deeper nesting than any real object uses; a client's 1,000-level file would otherwise exhaust the
# interpreter's stack (each level is a few frames here and in every walker of the tree).
MAX_NESTING = 64
# Inflating a deflated data set is capped at the largest file accepted uncompressed (the hub's
# default upload limit): 1 MB of deflate can otherwise claim gigabytes.
MAX_INFLATED_BYTES = 2 * 1024**3

__all__ = ["MAX_INFLATED_BYTES", "MAX_NESTING"]
