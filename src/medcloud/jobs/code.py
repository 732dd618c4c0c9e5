"""A job's code travels as one zip: a script or a small folder, size-capped, unpacked without surprises.

The hub refuses an archive that is too big packed or unpacked, has too many members, holds links, or
names a path that would land outside the folder it is unpacked into; the entry point must be a `.py`
file inside it.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medcloud.errors import InvalidInput, PathEscape, TooLarge

__all__ = ["CodeLimits", "check_archive", "extract", "pack"]

SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache"})


@dataclass(frozen=True)
class CodeLimits:
    max_bytes: int = 10 * 1024 * 1024  # packed
    max_unpacked_bytes: int = 50 * 1024 * 1024
    max_files: int = 500


def pack(path: Path, limits: CodeLimits = CodeLimits()) -> tuple[bytes, str]:
    """Zip a script or a folder; returns (zip bytes, default entry point). Caches and VCS folders are left out."""
    buf = io.BytesIO()
    path = Path(path)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if path.is_file():
            zf.write(path, path.name)
            entry = path.name
        elif path.is_dir():
            n = 0
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                for name in sorted(files):
                    full = Path(root) / name
                    if full.is_symlink() or not full.is_file():
                        continue
                    n += 1
                    if n > limits.max_files:
                        raise TooLarge(f"{path} holds more than {limits.max_files} files")
                    zf.write(full, full.relative_to(path).as_posix())
            entry = "main.py"
        else:
            raise InvalidInput(f"{path} is neither a file nor a folder")
    data = buf.getvalue()
    if len(data) > limits.max_bytes:
        raise TooLarge(f"the packed code is {len(data)} bytes, over the {limits.max_bytes}-byte limit")
    return data, entry


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or ".." in p.parts or ":" in p.parts[0]:
        raise PathEscape(f"archive member {name!r} would land outside the job's folder")
    return p


def check_archive(data: bytes, entrypoint: str, limits: CodeLimits = CodeLimits()) -> list[str]:
    """Check a job's zip against `limits`; returns its file names. InvalidInput (or a child) says why not."""
    if len(data) > limits.max_bytes:
        raise TooLarge(f"job code is at most {limits.max_bytes} bytes packed")
    entry = _safe_name(entrypoint)
    if entry.suffix != ".py":
        raise InvalidInput("the entry point must be a .py file")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput("job code must be a zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise TooLarge(f"job code holds at most {limits.max_files} files")
        total = 0
        names = []
        for info in infos:
            _safe_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidInput(f"archive member {info.filename!r} is a link")
            total += info.file_size
            if total > limits.max_unpacked_bytes:
                raise TooLarge(f"job code unpacks to at most {limits.max_unpacked_bytes} bytes")
            if not info.is_dir():
                names.append(info.filename)
    if str(entry) not in names:
        raise InvalidInput(f"entry point {entrypoint!r} is not in the archive")
    return names


def extract(data: bytes, dest: Path, limits: CodeLimits = CodeLimits()) -> None:
    """Unpack a checked archive into `dest`, counting bytes as they come (a lying header cannot inflate)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    budget = limits.max_unpacked_bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            target = (root / _safe_name(info.filename)).resolve()
            if not target.is_relative_to(root):
                raise PathEscape(f"archive member {info.filename!r} would land outside the job's folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                while chunk := src.read(1024 * 1024):
                    budget -= len(chunk)
                    if budget < 0:
                        raise TooLarge(f"job code unpacks to at most {limits.max_unpacked_bytes} bytes")
                    out.write(chunk)
