"""Process-wide thread pools created on first use (pack syncs, image resizes)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["SharedPool"]


class SharedPool:
    """One `ThreadPoolExecutor` per process, made by the first `get()` (not at import) and then kept."""

    def __init__(self, workers: int, prefix: str) -> None:
        self.workers, self.prefix = workers, prefix
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.prefix)
            return self._pool
