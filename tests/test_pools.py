"""medcloud.pools: one lazily made thread pool per process, shared by every caller."""

from __future__ import annotations

import threading

from medcloud.pools import SharedPool


def test_pool_is_made_on_first_use_and_then_kept() -> None:
    shared = SharedPool(2, "test-pool")
    assert shared._pool is None  # nothing is started at import or construction
    pool = shared.get()
    try:
        assert shared.get() is pool
        names = set(pool.map(lambda _: threading.current_thread().name, range(8)))
        assert names and all(n.startswith("test-pool") for n in names)
        assert pool._max_workers == 2
    finally:
        pool.shutdown()


def test_callers_racing_for_the_first_pool_share_one() -> None:
    shared = SharedPool(1, "race-pool")
    start = threading.Barrier(8)
    got: list[object] = []

    def take() -> None:
        start.wait()
        got.append(shared.get())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(got) == 8 and len({id(p) for p in got}) == 1
    finally:
        shared.get().shutdown()
