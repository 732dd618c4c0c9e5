"""Intake waits for complete files, refuses paths outside its folder and never lets a bad file block others."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_fakes import FakeDeid

from medcloud.gateway.intake import Intake, read_file_list
from medcloud.gateway.outbox import Outbox


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox(tmp_path / "state")
    yield ob
    ob.close()


@pytest.fixture
def watch(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


def make_intake(outbox: Outbox, deid: FakeDeid, root: Path, **kw: float) -> Intake:
    return Intake(
        outbox, deid, root, max_file_bytes=int(kw.get("max_file_bytes", 1000)), settle_seconds=kw.get("settle", 0.0)
    )


def drain(intake: Intake, rounds: int = 3) -> None:
    for _ in range(rounds):
        intake.process_ready()


def test_good_bad_and_burned_in_files_each_get_their_outcome(outbox: Outbox, fake_deid: FakeDeid, watch: Path) -> None:
    (watch / "sub").mkdir()
    (watch / "a.dcm").write_bytes(b"image A")
    (watch / "sub" / "b.dcm").write_bytes(b"image B")
    (watch / "broken.dcm").write_bytes(b"BAD truncated")
    (watch / "notes.txt").write_bytes(b"TXT hello")
    (watch / "us.dcm").write_bytes(b"BURN ultrasound")
    (watch / "big.dcm").write_bytes(b"x" * 2000)
    (watch / "DICOMDIR").write_bytes(b"index")
    (watch / ".hidden.dcm").write_bytes(b"ignored")
    (watch / "copying.dcm.part").write_bytes(b"ignored")
    intake = make_intake(outbox, fake_deid, watch)
    intake.scan()
    drain(intake)
    counts = outbox.counts()
    assert (counts.queued, counts.quarantined, counts.rejected) == (2, 1, 4)
    reasons = {Path(r["path"]).name: r["reason"] for r in outbox.rejected_sources()}
    assert "truncated DICOM" in reasons["broken.dcm"]
    assert "unsupported format" in reasons["notes.txt"]
    assert "too large: 2000 bytes > limit 1000" in reasons["big.dcm"]
    assert "not an image" in reasons["DICOMDIR"]
    [q] = outbox.quarantined()
    assert Path(q["stored_as"]).read_bytes() == b"DEID:BURN ultrasound"
    assert ".hidden.dcm" not in fake_deid.calls and "copying.dcm.part" not in fake_deid.calls
    payloads = {outbox.payload(i) for i in outbox.claim_due(1e12, [], limit=10)}
    assert payloads == {b"DEID:image A", b"DEID:image B"}


def test_handled_files_are_not_read_again_unless_changed(outbox: Outbox, fake_deid: FakeDeid, watch: Path) -> None:
    f = watch / "a.dcm"
    f.write_bytes(b"v1")
    intake = make_intake(outbox, fake_deid, watch)
    intake.scan()
    drain(intake)
    intake.scan()
    drain(intake)
    assert fake_deid.calls == ["a.dcm"]
    f.write_bytes(b"version 2")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    intake.scan()
    drain(intake)
    assert fake_deid.calls == ["a.dcm", "a.dcm"]
    assert outbox.counts().queued == 2


def test_growing_file_is_read_only_once_it_settles(outbox: Outbox, fake_deid: FakeDeid, watch: Path) -> None:
    f = watch / "slow.dcm"
    intake = make_intake(outbox, fake_deid, watch, settle=0.3)
    with f.open("wb") as fh:
        for n in range(5):
            fh.write(b"chunk%d " % n)
            fh.flush()
            intake.offer(f)
            intake.process_ready()
            assert fake_deid.calls == [], "a file still being written must not be read"
            time.sleep(0.1)
    deadline = time.monotonic() + 3
    while not fake_deid.calls and time.monotonic() < deadline:
        intake.process_ready()
        time.sleep(0.05)
    [item] = outbox.claim_due(1e12, [])
    assert outbox.payload(item) == b"DEID:" + b"".join(b"chunk%d " % n for n in range(5))


def test_symlink_out_of_the_folder_is_refused(outbox: Outbox, fake_deid: FakeDeid, watch: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(b"identifying")
    (watch / "innocent.dcm").symlink_to(secret)
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "x.dcm").write_bytes(b"x")
    (watch / "linkdir").symlink_to(outside_dir, target_is_directory=True)
    intake = make_intake(outbox, fake_deid, watch)
    intake.scan()
    drain(intake)
    assert fake_deid.calls == []
    reasons = [r["reason"] for r in outbox.rejected_sources()]
    assert len(reasons) == 2
    assert all("path escapes the watched folder" in r for r in reasons)
    assert outbox.counts().queued == 0


def test_file_list_with_dotdot_is_refused_and_the_rest_proceeds(
    outbox: Outbox, fake_deid: FakeDeid, watch: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.dcm").write_bytes(b"identifying")
    (watch / "ok.dcm").write_bytes(b"fine")
    listing = tmp_path / "list.txt"
    listing.write_text("# exported by PACS\nok.dcm\n../secret.dcm\n\n" + str(tmp_path / "secret.dcm") + "\n")
    intake = make_intake(outbox, fake_deid, watch)
    intake.offer_list(read_file_list(listing))
    drain(intake)
    assert fake_deid.calls == ["ok.dcm"]
    assert outbox.counts().queued == 1
    rejected = outbox.rejected_sources()
    assert len(rejected) == 1, "both spellings name the same file"
    assert "outside" in rejected[0]["reason"]


def test_read_changes_under_our_feet_are_retried(outbox: Outbox, fake_deid: FakeDeid, watch: Path) -> None:
    f = watch / "a.dcm"
    f.write_bytes(b"original")
    intake = make_intake(outbox, fake_deid, watch)

    real = intake._read

    def rewrite_then_read(path: Path, st: os.stat_result) -> bytes:
        f.write_bytes(b"rewritten by the modality")
        return real(path, st)

    intake._read = rewrite_then_read  # type: ignore[method-assign]
    assert intake.handle(f) == "changed"
    intake._read = real  # type: ignore[method-assign]
    drain(intake)
    [item] = outbox.claim_due(1e12, [])
    assert outbox.payload(item) == b"DEID:rewritten by the modality"


def test_dicom_the_hub_would_refuse_is_rejected_at_the_site(outbox: Outbox, watch: Path) -> None:
    """Real engine: a CT image without pixel data (cut at an element boundary) never leaves the site."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    from medcloud.deid import Deidentifier, DeidOptions, SiteKey

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buf = io.BytesIO()
    ds.save_as(buf)
    (watch / "whole.dcm").write_bytes(buf.getvalue())
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    (watch / "no-pixels.dcm").write_bytes(buf.getvalue())
    engine = Deidentifier(SiteKey.generate(watch.parent / "site.key"), DeidOptions())
    intake = Intake(outbox, engine, watch, max_file_bytes=10**7, settle_seconds=0.0)
    intake.scan()
    drain(intake)
    counts = outbox.counts()
    assert (counts.queued, counts.rejected) == (1, 1)
    [rejected] = outbox.rejected_sources()
    assert Path(rejected["path"]).name == "no-pixels.dcm"
    assert "the hub would refuse it" in rejected["reason"] and "no pixel data" in rejected["reason"]
