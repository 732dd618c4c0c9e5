"""The forwarder sends over real HTTP, retries what may succeed later and dead-letters what never will."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_fakes import TOKEN, FakeHub, Reply, free_port

from medcloud.gateway.forwarder import Forwarder, ForwarderConfig, backoff_delay, parse_retry_after
from medcloud.gateway.outbox import Outbox, SourceRef


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox(tmp_path / "state")
    yield ob
    ob.close()


def fill(outbox: Outbox, n: int) -> list[bytes]:
    payloads = [f"payload-{i}".encode() * 100 for i in range(n)]
    for i, p in enumerate(payloads):
        outbox.enqueue(SourceRef(f"/src/{i}.dcm", len(p), i), p, media_type="application/dicom", filename=f"{i}.dcm")
    return payloads


def forwarder(outbox: Outbox, hub_url: str, token: str = TOKEN, **kw: float) -> Forwarder:
    """A fast-retrying forwarder; keyword arguments override ForwarderConfig fields."""
    cfg = ForwarderConfig(hub_url=hub_url, token=token, workers=3, backoff_base=0.05, backoff_cap=0.3)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Forwarder(outbox, cfg)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 2.0 <= delays[3] <= 4.0
    assert all(15.0 <= d <= 30.0 for d in delays[7:])
    assert len({round(d, 6) for d in delays[7:]}) > 1, "jitter spreads retries of many gateways"


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_delivers_everything_in_batches(outbox: Outbox, fake_hub: FakeHub) -> None:
    payloads = fill(outbox, 30)
    fw = forwarder(outbox, fake_hub.url, batch_size=8)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 30)
    fw.stop()
    assert sorted(fake_hub.stored.values()) == sorted(payloads)
    assert sum(fake_hub.batches) == 30 and max(fake_hub.batches) == 8
    assert list(outbox.payload_dir.iterdir()) == [], "delivered payloads are removed"


def test_hub_without_batches_gets_one_file_per_request(outbox: Outbox, fake_hub: FakeHub) -> None:
    fake_hub.batch_enabled = False
    payloads = fill(outbox, 12)
    fw = forwarder(outbox, fake_hub.url)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 12)
    fw.stop()
    assert sorted(fake_hub.stored.values()) == sorted(payloads)
    assert fake_hub.requests[0]["path"] == "/api/v1/ingest/batch"
    singles = [r for r in fake_hub.requests if r["path"] == "/api/v1/ingest"]
    assert len(singles) == 12
    headers = singles[0]["headers"]
    assert headers["content-type"] == "application/dicom"
    assert headers["x-medcloud-filename"].endswith(".dcm")
    assert outbox.counts().dead == 0


def test_batch_part_refused_alone_and_batch_outage_retried(outbox: Outbox, fake_hub: FakeHub) -> None:
    payloads = fill(outbox, 10)
    fake_hub.by_uid["3.dcm"] = "f" * 64  # one part conflicts with what the hub holds
    fake_hub.script = [Reply(503, {"title": "Service unavailable"})]
    fw = forwarder(outbox, fake_hub.url, batch_size=10, workers=1)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 9 and outbox.counts().dead == 1)
    fw.stop()
    [dead] = outbox.dead_items()
    assert dead["last_status"] == 409 and "same UID, other bytes" in dead["last_error"]
    assert sorted(fake_hub.stored.values()) == sorted(p for i, p in enumerate(payloads) if i != 3)
    assert fw.stats.snapshot()["retries"] == 10, "the whole batch was retried after the 503"


def test_batch_refused_as_a_whole_is_resent_file_by_file(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 5)
    fake_hub.script = [Reply(413, {"title": "Payload too large", "status": 413})]
    fw = forwarder(outbox, fake_hub.url, workers=1)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 5)
    fw.stop()
    assert [r["path"] for r in fake_hub.requests][1:] == ["/api/v1/ingest"] * 5


def test_server_errors_are_retried_until_accepted(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 2)
    fake_hub.script = [Reply(500, {"title": "boom"}), Reply(503), Reply(502), Reply(408)]
    fw = forwarder(outbox, fake_hub.url, batch_size=1)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 2)
    fw.stop()
    assert len(fake_hub.stored) == 2
    assert fw.stats.snapshot()["retries"] == 4
    assert outbox.counts().dead == 0


def test_429_retry_after_pauses_all_workers(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 3)
    fake_hub.script = [Reply(429, {"title": "Too many requests"}, {"Retry-After": "1"})]
    fw = forwarder(outbox, fake_hub.url, batch_size=1)
    started = time.monotonic()
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 3)
    fw.stop()
    assert len(fake_hub.requests) == 4, "the refused item was sent again, once"
    # Every worker honoured the pause: nothing was delivered before Retry-After ran out.
    assert time.monotonic() - started >= 0.95
    assert outbox.counts().dead == 0


def test_permanent_refusals_become_dead_letters_with_reason(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 3)
    fake_hub.script = [Reply(415, {"title": "Unsupported format", "status": 415, "detail": "not an image"})]
    fw = forwarder(outbox, fake_hub.url, batch_size=1)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 2 and outbox.counts().dead == 1)
    fw.stop()
    [dead] = outbox.dead_items()
    assert dead["last_status"] == 415
    assert "Unsupported format: not an image" in dead["last_error"]


def test_wrong_token_dead_letters_then_retry_dead_recovers(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 2)
    fw = forwarder(outbox, fake_hub.url, token="expired")
    fw.start()
    wait_for(lambda: outbox.counts().dead == 2)
    fw.stop()
    assert all("refused the gateway token" in d["last_error"] for d in outbox.dead_items())
    assert fake_hub.stored == {}
    assert outbox.retry_dead() == 2
    fw = forwarder(outbox, fake_hub.url)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 2)
    fw.stop()


def test_conflict_is_a_dead_letter(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 1)
    fake_hub.by_uid["0.dcm"] = "f" * 64  # the hub already holds this instance with other bytes
    fw = forwarder(outbox, fake_hub.url)
    fw.start()
    wait_for(lambda: outbox.counts().dead == 1)
    fw.stop()
    assert outbox.dead_items()[0]["last_status"] == 409


def test_ack_for_other_bytes_is_not_delivery(outbox: Outbox, fake_hub: FakeHub) -> None:
    fill(outbox, 1)
    fake_hub.script = [Reply(201, {"status": "stored", "sha256": "0" * 64})]
    fw = forwarder(outbox, fake_hub.url, batch_size=1)
    fw.start()
    wait_for(lambda: outbox.counts().dead == 1)
    fw.stop()
    assert outbox.counts().delivered == 0
    assert "hub stored sha256" in outbox.dead_items()[0]["last_error"]


def test_hub_down_then_up_delivers_exactly_once(outbox: Outbox) -> None:
    port = free_port()
    payloads = fill(outbox, 5)
    fw = forwarder(outbox, f"http://127.0.0.1:{port}")
    fw.start()
    wait_for(lambda: fw.stats.snapshot()["retries"] >= 2)
    assert outbox.counts().queued == 5
    assert fw.stats.snapshot()["paused_until"] > 0, "connection errors pause the whole pool"
    hub = FakeHub(port).start()
    try:
        wait_for(lambda: outbox.counts().delivered == 5)
    finally:
        fw.stop()
        hub.stop()
    assert sorted(hub.stored.values()) == sorted(payloads)
    assert len(hub.stored) == 5


def test_lost_reply_is_resent_and_hub_answers_duplicate(outbox: Outbox, fake_hub: FakeHub) -> None:
    payloads = fill(outbox, 1)
    seen: list[int] = []

    def store_then_fail(body: bytes, headers: dict[str, str]) -> Reply | None:
        seen.append(1)
        if len(seen) == 1:  # stored, but the reply never reached the gateway
            fake_hub.override = None
            fake_hub.handle("/api/v1/ingest", body, headers)
            return Reply(503)
        return None

    fake_hub.override = store_then_fail
    fw = forwarder(outbox, fake_hub.url)
    fw.start()
    wait_for(lambda: outbox.counts().delivered == 1)
    fw.stop()
    assert list(fake_hub.stored.values()) == payloads
    assert fw.stats.snapshot()["duplicates"] == 1
