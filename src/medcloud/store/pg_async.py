"""Reads on the event loop for a PostgreSQL catalog: psycopg's asyncio connections, no worker thread.

A small search on PostgreSQL costs the database a few tens of microseconds; handing it to a worker thread
and back (a queue, a thread wake-up and a loop wake-up, each contending for the GIL) cost more than the
query. `AsyncReads` runs the statement on the loop itself with psycopg's `AsyncConnection`: the loop is
never blocked, whatever the database does, since the wait for the reply is an awaited socket read.

Each event loop (one per uvicorn worker) keeps its own connections, made with the same connection
arguments and type adapters as the engine's, in autocommit: every statement is its own read transaction,
as `Database.read_rows` runs it. A connection that fails is closed, never reused; a read that fails
because a kept connection had gone stale (the database restarted) is run once more on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

__all__ = ["AsyncReads"]

_MAX_CONNECTIONS = 8  # per event loop: a burst of searches waits for one rather than opening more


async def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()


class _LoopPool:
    def __init__(self) -> None:
        self.idle: list[Any] = []
        self.slots = asyncio.Semaphore(_MAX_CONNECTIONS)


class AsyncReads:
    """Statements of an engine's PostgreSQL database run on the running event loop (see the module)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._args, self._kwargs = engine.dialect.create_connect_args(engine.url)
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()

    def _pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _LoopPool()
        return pool

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(*self._args, **self._kwargs, autocommit=True)

    async def fetch(self, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one statement (its SQL and driver arguments, as `_Plan.bind` gives them).

        A driver error is raised as SQLAlchemy raises it (`sqlalchemy.exc.DBAPIError` subclasses)."""
        import psycopg

        pool = self._pool()
        async with pool.slots:
            conn = pool.idle.pop() if pool.idle else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._connect()
                try:
                    rows = await self._execute(conn, sql, args)
                except psycopg.OperationalError:
                    if not (reused and conn.broken):
                        raise
                    # A kept connection the server had dropped: once more, on a new one.
                    await _close(conn)
                    conn = None
                    conn = await self._connect()
                    rows = await self._execute(conn, sql, args)
            except psycopg.Error as exc:
                await _close(conn)
                raise sa.exc.DBAPIError.instance(sql, args, exc, psycopg.Error) from exc
            except BaseException:  # cancelled mid-statement: the connection's state is unknown
                await _close(conn)
                raise
            pool.idle.append(conn)
            return rows

    @staticmethod
    async def _execute(conn: Any, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())

    async def aclose(self) -> None:
        """Close the running loop's kept connections."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is None:
            return
        while pool.idle:
            await _close(pool.idle.pop())
