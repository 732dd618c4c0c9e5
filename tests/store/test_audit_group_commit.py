"""Group commit of `AuditLog.record`: concurrent callers share one transaction, none returns before its
event is committed, the chain and its seal stay those of events appended one by one, and one caller's
bad event fails that caller only."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from medcloud.security.audit import AuditSeal
from medcloud.store import Catalog
from medcloud.store.tables import audit_events

N = 8


def _catalog(tmp_path: Path) -> Catalog:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite3'}", seal=AuditSeal(tmp_path / "secrets"))
    cat.migrate()
    return cat


def _held_first_write(cat: Catalog, waiting: int) -> list[int]:
    """Make the first write transaction wait until `waiting` other callers have queued behind it, and
    count the events each transaction commits (seen from a fresh connection after each commit)."""
    real_write = cat.db.write
    committed: list[int] = []
    first = threading.Event()

    @contextlib.contextmanager
    def write() -> Iterator[Any]:
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + 10
            while len(cat.audit._group_queue) < waiting and time.monotonic() < deadline:
                time.sleep(0.005)
        before = cat.audit.head_seq()
        with real_write() as conn:
            yield conn
        committed.append(cat.audit.head_seq() - before)

    cat.db.write = write  # type: ignore[method-assign]
    return committed


def test_concurrent_records_share_one_commit_and_the_chain_verifies(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    committed = _held_first_write(cat, N - 1)
    rows: dict[int, dict[str, Any]] = {}
    seen_committed: dict[int, bool] = {}

    def record(i: int) -> None:
        row = cat.audit.record(subject=f"reader-{i}", action="dicomweb.metadata", resource=f"study/{i}", outcome="ok")
        rows[i] = row
        # Returned only once committed: another connection already sees the event.
        with cat.db.engine.connect() as conn:
            found = conn.execute(sa.select(audit_events.c.hash).where(audit_events.c.seq == row["seq"])).scalar()
        seen_committed[i] = found == row["hash"]

    threads = [threading.Thread(target=record, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["seq"] for r in rows.values()) == list(range(1, N + 1))
    assert all(seen_committed.values()) and len(seen_committed) == N
    # The first caller led alone; the N-1 that queued behind it were written by one leader, together.
    assert committed == [1, N - 1], committed
    report = cat.audit.verify()
    assert report.ok and report.checked == N and report.sealed_seq == N, report
    head, _ = cat.audit.seal.read_head() if cat.audit.seal else (None, None)
    assert head is not None and head.seq == N and head.since == 1
    cat.dispose()


def test_a_bad_event_fails_only_its_caller(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    _held_first_write(cat, 3)
    outcomes: dict[str, Any] = {}

    class Unstorable:
        def __str__(self) -> str:
            raise ValueError("cannot be written as text")

    def record(name: str, detail: dict[str, Any] | None) -> None:
        try:
            outcomes[name] = cat.audit.record(subject=name, action="t", resource="r", outcome="ok", detail=detail)
        except ValueError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=record, args=("lead", None))]
    threads[0].start()
    while not cat.audit._group_busy:
        time.sleep(0.001)
    threads += [
        threading.Thread(target=record, args=(name, detail))
        for name, detail in (("a", {"n": 1}), ("bad", {"x": Unstorable()}), ("b", {"n": 2}))
    ]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(outcomes["bad"], ValueError)
    assert {outcomes[n]["subject"] for n in ("lead", "a", "b")} == {"lead", "a", "b"}
    report = cat.audit.verify()
    assert report.ok and report.checked == 3, report
    cat.dispose()


def test_a_failed_commit_fails_every_caller_of_the_group(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)

    @contextlib.contextmanager
    def broken() -> Iterator[Any]:
        raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))
        yield  # pragma: no cover

    cat.db.write = broken  # type: ignore[method-assign]
    with pytest.raises(sa.exc.OperationalError):
        cat.audit.record(subject="s", action="a", resource="r", outcome="ok")
    assert not cat.audit._group_busy and not cat.audit._group_queue  # the next caller can lead
    cat.dispose()


def test_fields_are_checked_before_joining_a_group(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    with pytest.raises(TypeError, match="outcome"):
        cat.audit.record(subject="s", action="a", resource="r")
    with pytest.raises(TypeError, match="unknown"):
        cat.audit.record(subject="s", action="a", resource="r", outcome="ok", severity="high")
    assert cat.audit.head_seq() == 0
    cat.dispose()
