"""Backups of the hub in generations, restore that checks every byte first, and the offline copy.

`medcloud backup` writes one generation under `backup_dir`:

    gen-20261129T223000Z/
        data/...            the data folder: secrets/ (audit key, sealed head), packs, loose blobs, keys
        blobs/...           the blob folder, when it lives outside the data folder
        catalog.sqlite3     the catalog, through SQLite's online backup API (PostgreSQL: catalog.pgdump)
        progress.jsonl      the files done so far (lets an interrupted backup resume)
        MANIFEST.json       written last: SHA-256 and size of every file, row counts of the catalog
        OFFLINE.json        once the generation has been copied to offline media (`backup export`)

Only a generation with a MANIFEST.json counts: a backup killed half-way leaves a folder without one,
which the next `medcloud backup` resumes (files already copied and unchanged are not copied again), and
which `restore` refuses. The newest `backup_generations` complete generations are kept.

Consistency while the hub runs: secrets first (the sealed audit head may then lag the catalog, which
the audit check accepts, never lead it), then the catalog snapshot, then every SQLite file (the packs'
index) by the online API, then the blobs. Blobs are immutable and packs append-only, so everything the
catalog snapshot references is in the copy. SQLite files are never copied as bytes (a WAL file could
be mid-checkpoint); caches and half-received uploads are skipped.

The key-encryption key of encryption at rest (`encryption_key_file`) is never put in a backup, even when
it lives in the data folder: a backup medium stolen with its key would reveal everything. Keep it apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcloud.errors import ConfigError, IntegrityError, NotFound
from medcloud.fsio import fsync_dir, write_atomic

if TYPE_CHECKING:
    from medcloud.config import Settings

__all__ = [
    "FORMAT",
    "backup_status",
    "complete_generations",
    "export_offline",
    "mark_offline",
    "restore_generation",
    "run_backup",
    "verify_generation",
]

FORMAT = "medcloud-backup/1"
MANIFEST = "MANIFEST.json"
PROGRESS = "progress.jsonl"
OFFLINE = "OFFLINE.json"
OFFLINE_LOG = "offline-copies.jsonl"
CATALOG_SQLITE = "catalog.sqlite3"
CATALOG_PGDUMP = "catalog.pgdump"
_SKIP_DIRS = {".incoming", "cache", "__pycache__"}
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp", ".part", ".lock")
_CHUNK = 1024 * 1024
# Tests slow a backup down to kill it half-way (seconds per file); never set in production.
_DELAY_ENV = "MEDCLOUD_TEST_BACKUP_FILE_DELAY"


@dataclass(frozen=True)
class Generation:
    name: str
    path: Path
    manifest: dict[str, Any]


def _require_dir(settings: Settings) -> Path:
    if settings.backup_dir is None:
        raise ConfigError("no backup_dir: set MEDCLOUD_BACKUP_DIR (or backup_dir in medcloud.toml, or --to)")
    return Path(settings.backup_dir).resolve()


def _is_sqlite_url(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str) -> Path:
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    if not db:
        raise ConfigError(f"cannot back up an in-memory catalog ({url})")
    return Path(db).resolve()


def _sqlite_copy(src: Path, dst: Path, key: bytes | None = None) -> None:
    """A consistent copy of a live SQLite database (WAL included) through the online backup API.

    With `key` (an encrypted catalog), both ends are SQLCipher databases under that key: the copy is as
    encrypted as the original, and its pages are never written in clear."""
    from medcloud.security.catalog_cipher import connect

    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    source = connect(src, key, read_only=True, timeout=30)
    try:
        target = connect(tmp, key)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst)


def _is_sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _hash_copy(src: Path, dst: Path) -> tuple[str, int]:
    """Copy `src` to `dst` (fsynced) and return the SHA-256 and size of what was written."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    return digest.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _walk(root: Path, exclude: set[Path]) -> Iterator[Path]:
    """Files under `root` worth backing up, in a stable order (secrets first, then the rest)."""
    if not root.is_dir():
        return
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and (here / d).resolve() not in exclude)
        for name in sorted(filenames):
            p = here / name
            if name.endswith(_SKIP_SUFFIXES) or p.resolve() in exclude or not p.is_file() or p.is_symlink():
                continue
            found.append(p)
    found.sort(key=lambda p: (0 if p.relative_to(root).parts[0] == "secrets" else 1, str(p.relative_to(root))))
    yield from found


def _generation_name(now: dt.datetime) -> str:
    return "gen-" + now.strftime("%Y%m%dT%H%M%S%fZ")


def _all_generations(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("gen-"))


def _load_manifest(gen: Path) -> dict[str, Any]:
    path = gen / MANIFEST
    if not path.is_file():
        raise IntegrityError(f"generation {gen.name} is incomplete (no {MANIFEST}): the backup did not finish")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"generation {gen.name}: {MANIFEST} is unreadable ({exc})") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise IntegrityError(f"generation {gen.name}: {MANIFEST} is not a {FORMAT} manifest")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if manifest.get("manifest_sha256") != _digest_json(body):
        raise IntegrityError(f"generation {gen.name}: {MANIFEST} was altered (its own checksum does not match)")
    return manifest


def _digest_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def complete_generations(settings: Settings) -> list[Generation]:
    """Complete generations, oldest first (a folder without a readable manifest is not one)."""
    out = []
    for gen in _all_generations(_require_dir(settings)):
        with contextlib.suppress(IntegrityError):
            out.append(Generation(gen.name, gen, _load_manifest(gen)))
    return out


def _row_counts(db: Path, key: bytes | None = None) -> dict[str, int]:
    from medcloud.security.catalog_cipher import connect

    con = connect(db, key, read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        # table names come from sqlite_master itself, quoted
        return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}  # noqa: S608
    finally:
        con.close()


def run_backup(settings: Settings, *, log: Any = None) -> Path:
    """Write (or resume) one generation; return its folder once its manifest is written."""
    root = _require_dir(settings)
    data_dir = Path(settings.data_dir).resolve()
    blob_dir = settings.resolved_blob_dir
    if root == data_dir or data_dir in root.parents:
        raise ConfigError(f"backup_dir {root} is inside the data folder {data_dir}: put backups on other storage")
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / ".backup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `medcloud backup` is writing to {root}") from None
        return _run_backup_locked(settings, root, data_dir, blob_dir, log)
    finally:
        os.close(lock)


def _run_backup_locked(settings: Settings, root: Path, data_dir: Path, blob_dir: Path, log: Any) -> Path:
    partial = [g for g in _all_generations(root) if not (g / MANIFEST).exists()]
    gen = partial[-1] if partial else root / _generation_name(dt.datetime.now(dt.timezone.utc))
    gen.mkdir(exist_ok=True)
    delay = float(os.environ.get(_DELAY_ENV, "0") or 0)

    done: dict[str, dict[str, Any]] = {}
    progress_path = gen / PROGRESS
    if progress_path.is_file():
        for line in progress_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                done[row["path"]] = row
    resumed = len(done)
    files: dict[str, dict[str, Any]] = {}
    exclude = {data_dir / "catalog.sqlite3"}
    key_file = getattr(settings, "encryption_key_file", None)
    if key_file:
        exclude.add(Path(key_file).resolve())
    url = settings.resolved_database_url
    catalog_path = _sqlite_path(url) if _is_sqlite_url(url) else None
    if catalog_path is not None:
        exclude.add(catalog_path)
    if blob_dir != data_dir and data_dir not in blob_dir.parents:
        exclude.add(blob_dir)

    with progress_path.open("a", encoding="utf-8") as progress:

        def record(rel: str, src: Path | None, sha: str, size: int) -> None:
            st = src.stat() if src is not None else None
            row = {"path": rel, "sha256": sha, "size": size}
            files[rel] = row
            if st is not None:
                done[rel] = {**row, "src_size": st.st_size, "src_mtime_ns": st.st_mtime_ns}
                progress.write(json.dumps(done[rel]) + "\n")
                progress.flush()
                os.fsync(progress.fileno())

        def copy_tree(src_root: Path, prefix: str, skip: set[Path]) -> None:
            sqlite_files: list[Path] = []
            for src in _walk(src_root, skip):
                rel = f"{prefix}/{src.relative_to(src_root).as_posix()}"
                if _is_sqlite_file(src):
                    sqlite_files.append(src)
                    continue
                st = src.stat()
                prev = done.get(rel)
                dst = gen / rel
                if (
                    prev is not None
                    and prev.get("src_size") == st.st_size
                    and prev.get("src_mtime_ns") == st.st_mtime_ns
                    and dst.is_file()
                    and dst.stat().st_size == prev["size"]
                ):
                    files[rel] = {"path": rel, "sha256": prev["sha256"], "size": prev["size"]}
                    continue
                sha, size = _hash_copy(src, dst)
                record(rel, src, sha, size)
                if delay:
                    time.sleep(delay)
            # Databases inside the tree (the packs' index) by the online API, before the blobs they index.
            for src in sqlite_files:
                rel = f"{prefix}/{src.relative_to(src_root).as_posix()}"
                dst = gen / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                _sqlite_copy(src, dst)
                sha, size = _hash_file(dst)
                files[rel] = {"path": rel, "sha256": sha, "size": size}

        # 1. secrets (the sealed audit head), 2. the catalog, 3. everything else.
        secrets = data_dir / "secrets"
        if secrets.is_dir():
            copy_tree(secrets, "data/secrets", exclude)
        catalog: dict[str, Any]
        if catalog_path is not None:
            if not catalog_path.is_file():
                raise ConfigError(f"no catalog at {catalog_path}: nothing to back up")
            from medcloud.security.catalog_cipher import catalog_key

            key = catalog_key(settings, url)  # None: a catalog in clear; else it stays encrypted in the copy
            _sqlite_copy(catalog_path, gen / CATALOG_SQLITE, key)
            sha, size = _hash_file(gen / CATALOG_SQLITE)
            files[CATALOG_SQLITE] = {"path": CATALOG_SQLITE, "sha256": sha, "size": size}
            catalog = {
                "kind": "sqlite",
                "file": CATALOG_SQLITE,
                "rows": _row_counts(gen / CATALOG_SQLITE, key),
                "encrypted": key is not None,
            }
        else:
            _pg_dump(url, gen / CATALOG_PGDUMP)
            sha, size = _hash_file(gen / CATALOG_PGDUMP)
            files[CATALOG_PGDUMP] = {"path": CATALOG_PGDUMP, "sha256": sha, "size": size}
            catalog = {"kind": "postgresql", "file": CATALOG_PGDUMP, "rows": None}
        copy_tree(data_dir, "data", exclude | {secrets})
        if blob_dir in exclude:
            copy_tree(blob_dir, "blobs", set())

    # Anything left in the folder from an earlier attempt that is not part of this generation goes.
    keep = set(files) | {PROGRESS}
    for path in sorted(gen.rglob("*"), reverse=True):
        rel = path.relative_to(gen).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "generation": gen.name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "data_dir": str(data_dir),
        "blob_dir_outside": blob_dir in exclude,
        "catalog": catalog,
        "files": {rel: {"sha256": f["sha256"], "size": f["size"]} for rel, f in sorted(files.items())},
        "resumed_files": resumed,
        "key_file_left_out": str(Path(key_file).resolve()) if key_file else None,
    }
    manifest["manifest_sha256"] = _digest_json(manifest)
    fsync_dir(gen)
    write_atomic(gen / MANIFEST, json.dumps(manifest, indent=1).encode(), mode=0o600)
    progress_path.unlink(missing_ok=True)
    _rotate(root, settings.backup_generations)
    if log is not None:
        log(f"generation {gen.name}: {len(files)} files, {sum(f['size'] for f in files.values())} bytes")
    return gen


def _rotate(root: Path, keep: int) -> None:
    complete = [g for g in _all_generations(root) if (g / MANIFEST).is_file()]
    for old in complete[: max(0, len(complete) - keep)]:
        # The manifest goes first: a rotation interrupted half-way leaves an incomplete generation.
        (old / MANIFEST).unlink()
        shutil.rmtree(old)


def _pg_dump(url: str, dst: Path) -> None:
    exe = shutil.which("pg_dump")
    if exe is None:
        raise ConfigError(
            "the catalog is on PostgreSQL and pg_dump is not installed: install the PostgreSQL client, or back "
            "the database up with your PostgreSQL tooling and this command's blob copy"
        )
    from sqlalchemy.engine import make_url

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    tmp = dst.with_name(f".{dst.name}.tmp")
    proc = subprocess.run([exe, "--format=custom", "--file", str(tmp), libpq], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"pg_dump failed: {proc.stderr.strip()[:500]}")
    os.replace(tmp, dst)


def _find(settings: Settings, name: str | None) -> Path:
    root = _require_dir(settings)
    gens = _all_generations(root)
    if name is None:
        complete = [g for g in gens if (g / MANIFEST).is_file()]
        if not complete:
            raise NotFound(f"no complete backup generation in {root}")
        return complete[-1]
    path = root / name if not Path(name).is_absolute() else Path(name)
    if not path.is_dir():
        raise NotFound(f"no backup generation {name} in {root}")
    return path


def verify_generation(gen: Path) -> dict[str, Any]:
    """Check every file of a generation against its manifest; raise IntegrityError naming the first bad ones."""
    manifest = _load_manifest(gen)
    bad: list[str] = []
    for rel, want in manifest["files"].items():
        path = gen / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
            continue
        sha, size = _hash_file(path)
        if size != want["size"] or sha != want["sha256"]:
            bad.append(f"{rel}: SHA-256 {sha[:12]}… expected {want['sha256'][:12]}…")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise IntegrityError(
            f"generation {gen.name} is damaged, refusing to restore it: {'; '.join(bad[:5])}{more}; "
            "restore an older generation or the offline copy"
        )
    return manifest


def restore_generation(settings: Settings, name: str | None, *, target: Path) -> Path:
    """Restore generation `name` (default: the newest complete one) into the empty folder `target`.

    Every file is checked against the manifest before anything is written; a damaged generation is refused."""
    gen = _find(settings, name)
    manifest = verify_generation(gen)
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"restore target {target} is not empty: restore into a new folder")
    staging = target.with_name(f".{target.name}.restoring")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    catalog = manifest["catalog"]
    for rel in manifest["files"]:
        if rel in (CATALOG_SQLITE, CATALOG_PGDUMP):
            continue
        parts = rel.split("/", 1)
        dst = staging / parts[1] if parts[0] == "data" else staging / "blobs" / parts[1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(gen / rel, dst)
    if catalog["kind"] == "sqlite":
        shutil.copy2(gen / CATALOG_SQLITE, staging / "catalog.sqlite3")
    for path in [*staging.rglob("*")]:
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    if target.exists():
        target.rmdir()
    os.replace(staging, target)
    if catalog["kind"] == "postgresql":
        _pg_restore(settings.resolved_database_url, gen / CATALOG_PGDUMP)
    return gen


def _pg_restore(url: str, dump: Path) -> None:
    exe = shutil.which("pg_restore")
    if exe is None:
        raise ConfigError("the generation holds a PostgreSQL dump and pg_restore is not installed")
    from sqlalchemy.engine import make_url

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    proc = subprocess.run(
        [exe, "--clean", "--if-exists", "--no-owner", "--dbname", libpq, str(dump)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ConfigError(f"pg_restore failed: {proc.stderr.strip()[:500]}")


def mark_offline(settings: Settings, name: str | None, *, label: str, where: str = "") -> Path:
    """Record that generation `name` has been copied to offline media (a tape, a disk in a safe)."""
    gen = _find(settings, name)
    _load_manifest(gen)
    marker = {
        "generation": gen.name,
        "label": label,
        "where": where,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    write_atomic(gen / OFFLINE, json.dumps(marker, indent=1).encode(), mode=0o644)
    # Also in a log beside the generations: the marker outlives the generation's rotation.
    with (gen.parent / OFFLINE_LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(marker) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return gen / OFFLINE


def export_offline(settings: Settings, name: str | None, *, dest: Path, label: str) -> Path:
    """Copy a verified generation to `dest` (removable media), verify the copy, and mark both offline."""
    gen = _find(settings, name)
    verify_generation(gen)
    out = dest / gen.name
    if out.exists():
        raise ConfigError(f"{out} exists already")
    tmp = dest / f".{gen.name}.copying"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(gen, tmp, ignore=shutil.ignore_patterns(OFFLINE, PROGRESS))
    verify_generation(tmp.rename(out))
    marker = mark_offline(settings, gen.name, label=label, where=str(out))
    shutil.copy2(marker, out / OFFLINE)
    return out


def backup_status(settings: Settings) -> dict[str, Any]:
    """Evidence for the self-check (generations present, newest age, offline copy marker) and its verdict
    (`status`): FAIL without a backup folder or a complete generation, WARN on any other problem (old,
    too few generations, no offline copy), else PASS."""
    status = _backup_evidence(settings)
    if not status["configured"] or not status["generations"]:
        status["status"] = "FAIL"
    else:
        status["status"] = "WARN" if status["problems"] else "PASS"
    return status


def _backup_evidence(settings: Settings) -> dict[str, Any]:
    status: dict[str, Any] = {
        "configured": settings.backup_dir is not None,
        "backup_dir": str(settings.backup_dir) if settings.backup_dir else None,
        "generations_wanted": settings.backup_generations,
        "generations": 0,
        "incomplete": 0,
        "newest": None,
        "newest_age_hours": None,
        "offline_copy": None,
        "offline_age_days": None,
        "problems": [],
    }
    problems: list[str] = status["problems"]
    if settings.backup_dir is None:
        problems.append("no backup_dir configured: the hub is not backed up by medcloud")
        return status
    root = Path(settings.backup_dir)
    gens = complete_generations(settings)
    status["generations"] = len(gens)
    status["incomplete"] = sum(1 for g in _all_generations(root) if not (g / MANIFEST).is_file())
    now = dt.datetime.now(dt.timezone.utc)
    if not gens:
        problems.append(f"no complete backup generation in {root}")
        return status
    newest = gens[-1]
    created = dt.datetime.fromisoformat(newest.manifest["created_at"])
    status["newest"] = newest.name
    status["newest_age_hours"] = round((now - created).total_seconds() / 3600, 2)
    if status["newest_age_hours"] > 26:
        problems.append(f"the newest backup is {status['newest_age_hours']:.0f} hours old (more than a day)")
    if len(gens) < min(settings.backup_generations, 2):
        problems.append(f"only {len(gens)} generation(s): keep several (backup_generations)")
    offline: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in (root / OFFLINE_LOG).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                offline.append(json.loads(line))
    if offline:
        marker = max(offline, key=lambda m: str(m.get("at")))
        status["offline_copy"] = marker
        status["offline_age_days"] = round((now - dt.datetime.fromisoformat(marker["at"])).total_seconds() / 86400, 2)
    else:
        problems.append("no generation is marked as copied offline (`medcloud backup export` or `mark-offline`)")
    return status
