"""The catalog's database: engines, the writer lock, transactions and schema migrations.

SQLite (embedded) and PostgreSQL (at scale) behind one object. Writes run in short, serialized
transactions so the audit chain stays linear; reads run concurrently on their own connections.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's busy handler alone serializes writers there
    fcntl = None  # type: ignore[assignment]
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from medcloud.store.pg_async import AsyncReads

__all__ = ["Database", "ReadOverBudget", "driver_execute", "utcnow"]

_PG_WRITE_LOCK = 0x6D6564636C6F7564  # "medcloud": one advisory lock serializes writers (and the audit chain)
_AFTER_COMMIT = "medcloud.after_commit"


# An inline read (`Database.read_rows(..., budget_s=...)`) is checked against its deadline every this many
# SQLite virtual-machine steps (a few microseconds of work each time).
_PROGRESS_STEPS = 1000


class ReadOverBudget(Exception):
    """An inline read did not finish within its budget (`slow`), or could not start at once (the database
    busy, the inline connection in use or not open yet, or not SQLite): nothing was returned; run the read
    again off the event loop (`Database.read_rows` without a budget)."""

    def __init__(self, message: str, *, slow: bool = False) -> None:
        super().__init__(message)
        self.slow = slow


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return datetime.now(timezone.utc)


class Database:
    """Engines over one SQLAlchemy URL. Call `migrate()` once before use."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", sqlite_key: bytes | None = None) -> None:
        """`sqlite_key`: open the SQLite file with SQLCipher under this raw 256-bit page key
        (`medcloud.security.catalog_cipher`); the key never appears in the URL."""
        self.url = url
        self.dialect = sa.make_url(url).get_backend_name()
        self.encrypted = sqlite_key is not None
        self._write_lock = threading.Lock()
        self._writer_lock_fd: int | None = None
        # SQLite: the one connection writes go through, kept between them (writers are serialized, so one
        # is enough); checking a connection out of the pool and back in cost more CPU than a small ingest's
        # SQL. Opened on first use, dropped after a failed transaction and by `dispose`.
        self._writer: Connection | None = None
        # SQLite: the driver connection inline reads run on (`read_rows` with a budget), out of the pool and
        # never waiting for a lock (busy timeout 0); one caller at a time, a second one is told to go elsewhere.
        self._inline: Any = None
        self._inline_lock = threading.Lock()
        self._async: AsyncReads | None = None  # PostgreSQL: reads on the event loop (`read_rows_async`)
        kwargs: dict[str, Any] = {"future": True}
        if sqlite_key is not None and self.dialect != "sqlite":
            raise ValueError("sqlite_key is for a SQLite catalog")
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            do_connect = None
            if sqlite_key is not None:
                from medcloud.security.catalog_cipher import keyed_connector

                # SQLCipher's DB-API module for both engines (so SQLAlchemy maps its exceptions), and every new
                # connection keyed before anything else runs on it (SQLAlchemy's own first queries included).
                kwargs["module"], do_connect = keyed_connector(sqlite_key, sa.make_url(url).database or url)
            self.engine = sa.create_engine(url, **kwargs)
            self.write_engine = sa.create_engine(url, **kwargs)
            if do_connect is not None:
                sa.event.listen(self.engine, "do_connect", do_connect)
                sa.event.listen(self.write_engine, "do_connect", do_connect)
            _sqlite_hooks(self.engine, immediate=False, synchronous=sqlite_synchronous)
            _sqlite_hooks(self.write_engine, immediate=True, synchronous=sqlite_synchronous)
            database = sa.make_url(url).database
            if database and database != ":memory:" and fcntl is not None:
                # Writers of several processes queue on a kernel lock, which wakes the next one the moment
                # it is released; SQLite's own busy handler polls with sleeps of up to 100 ms instead.
                self._writer_lock_fd = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            self.engine = sa.create_engine(url, **kwargs)
            self.write_engine = self.engine

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        script_location = str(resources.files("medcloud.store") / "migrations")
        cfg = Config()
        cfg.set_main_option("script_location", script_location)
        with self._write_lock, self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK + 1})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        """Close every pooled connection and the writer lock."""
        with self._write_lock:
            self._drop_writer()
        with self._inline_lock:
            self._drop_inline()
        if self._writer_lock_fd is not None:
            os.close(self._writer_lock_fd)
            self._writer_lock_fd = None
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A serialized write transaction (commits on success, rolls back on error).

        Callbacks registered with `after_commit` run once the commit is done, still holding the
        writer lock, so they see commits in order.
        """
        with self._write_lock, self._process_lock():
            callbacks: dict[str, Callable[[], None]] = {}
            if self.dialect == "sqlite":
                conn = self._writer
                if conn is None or conn.closed or conn.invalidated:
                    conn = self._writer = self.write_engine.connect()
                try:
                    with conn.begin():
                        conn.info[_AFTER_COMMIT] = callbacks
                        try:
                            yield conn
                        finally:
                            conn.info.pop(_AFTER_COMMIT, None)  # never leave callbacks behind
                except sa.exc.SQLAlchemyError:
                    self._drop_writer()  # a database error: the next writer starts on a fresh connection
                    raise
            else:
                with self.write_engine.begin() as conn:
                    conn.info[_AFTER_COMMIT] = callbacks
                    try:
                        if self.dialect == "postgresql":
                            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")
                        yield conn
                    finally:
                        # conn.info outlives this checkout (the pool keeps it): never leave callbacks behind.
                        conn.info.pop(_AFTER_COMMIT, None)
            for callback in callbacks.values():
                callback()

    def _drop_writer(self) -> None:
        """Close the kept SQLite write connection (called holding the write lock)."""
        conn, self._writer = self._writer, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection is dropped all the same
                conn.close()

    def _drop_inline(self) -> None:
        """Discard the inline-read connection (called holding its lock): it is closed, never pooled again,
        since its busy timeout is not the pool's."""
        conn, self._inline = self._inline, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()

    def _open_inline(self) -> None:
        """Open the inline-read connection if no one has (it never waits for a lock once open)."""
        with self._inline_lock:
            if self._inline is not None:
                return
            conn = self.engine.raw_connection()
            try:
                conn.execute("PRAGMA busy_timeout=0")  # a locked database is ReadOverBudget, not a wait
            except Exception:
                conn.invalidate()
                raise
            self._inline = conn

    def read_rows(
        self, stmt: sa.Select[Any], params: Mapping[str, Any], *, budget_s: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The result keys and rows of one SELECT built once (a module constant or a cached statement).

        On SQLite and PostgreSQL it runs on a pooled driver connection in autocommit mode: the statement is
        its own read transaction (the snapshot that BEGIN and ROLLBACK around it gave), without those two
        statements (two round trips to PostgreSQL) and without SQLAlchemy's per-execution work; values pass
        SQLAlchemy's result processors (dates), so rows hold what `Connection.execute` gives. Elsewhere it
        is `Connection.execute`.

        `budget_s` (SQLite only): run on the caller's own thread, meant for the event loop, on a connection
        kept for that which never waits: `ReadOverBudget` if the statement runs past `budget_s` (a progress
        handler interrupts it), if the database is busy, if that connection is in use or not open yet (the
        first read without a budget opens it, since opening may wait), or if this is not SQLite. The caller
        then runs the read in a worker thread. A search that ends in well under a
        millisecond then costs no hop to a thread and back, and a slow one stalls the loop for the budget at most.
        """
        if self.dialect != "sqlite":
            if budget_s is not None:
                raise ReadOverBudget("inline reads are for SQLite")
            if self.dialect == "postgresql":
                return self._read_rows_pg(stmt, params)
            with self.read() as conn:
                result = conn.execute(stmt, params)
                return list(result.keys()), [tuple(r) for r in result]
        plan = _plan(self.engine.dialect, stmt, ())
        sql, args = plan.bind(params)
        if budget_s is None:
            pooled = self.engine.raw_connection()
            try:
                rows = self._fetch(pooled, sql, args)
            finally:
                pooled.close()
            if self._inline is None:
                self._open_inline()  # here, off the event loop: opening may wait for a lock
        else:
            if not self._inline_lock.acquire(blocking=False):
                raise ReadOverBudget("the inline connection is in use")
            try:
                rows = self._fetch_inline(sql, args, budget_s)
            finally:
                self._inline_lock.release()
        return plan.result_keys, plan.convert(rows)

    @property
    def async_reads(self) -> bool:
        """Whether `read_rows_async` can run reads on the event loop (PostgreSQL)."""
        return self.dialect == "postgresql"

    async def read_rows_async(
        self, stmt: sa.Select[Any], params: Mapping[str, Any]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """`read_rows` awaited on the running event loop (PostgreSQL: `medcloud.store.pg_async`), without a
        worker thread; the same SQL, parameters, values and errors."""
        if not self.async_reads:
            raise ValueError("reads on the event loop are for PostgreSQL")
        if self._async is None:
            from medcloud.store.pg_async import AsyncReads

            self._async = AsyncReads(self.engine)
        plan = _plan(self.engine.dialect, stmt, ())
        sql, args = plan.bind(params)
        return plan.result_keys, plan.convert(await self._async.fetch(sql, args))

    async def aclose(self) -> None:
        """Close the running event loop's connections of `read_rows_async` (before `dispose`)."""
        if self._async is not None:
            await self._async.aclose()

    def _read_rows_pg(self, stmt: sa.Select[Any], params: Mapping[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """`read_rows` on PostgreSQL: psycopg in autocommit mode for the one statement (the pool's pre-ping
        still checks the connection out), then back to transactions before it returns to the pool."""
        plan = _plan(self.engine.dialect, stmt, ())
        sql, args = plan.bind(params)
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            pooled = self.engine.raw_connection()
        except dbapi.Error as exc:  # as SQLAlchemy raises it (a Connection wraps it; the raw pool does not)
            raise sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error) from exc
        try:
            driver = pooled.driver_connection
            driver.autocommit = True  # type: ignore[union-attr]
            try:
                rows = self._fetch(pooled, sql, args)
            finally:
                driver.autocommit = False  # type: ignore[union-attr]
        except BaseException:
            pooled.invalidate()  # a connection left in an unknown state is not pooled again
            raise
        finally:
            pooled.close()
        return plan.result_keys, plan.convert(rows)

    def _fetch(self, conn: Any, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        dbapi = self.engine.dialect.loaded_dbapi
        cursor = conn.cursor()
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
        except dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, args, exc, dbapi.Error) from exc
        finally:
            cursor.close()

    def _fetch_inline(self, sql: str, args: list[Any], budget_s: float) -> list[tuple[Any, ...]]:
        """`_fetch` on the inline connection (held under its lock), interrupted past `budget_s`."""
        conn = self._inline
        if conn is None:
            raise ReadOverBudget("the inline connection is not open yet (a read without a budget opens it)")
        deadline = time.perf_counter() + budget_s
        stopped = False

        def progress() -> int:
            nonlocal stopped
            stopped = time.perf_counter() > deadline
            return int(stopped)

        dbapi = self.engine.dialect.loaded_dbapi
        conn.set_progress_handler(progress, _PROGRESS_STEPS)
        try:
            return self._fetch(conn, sql, args)
        except sa.exc.DBAPIError as exc:
            if stopped:
                raise ReadOverBudget(f"the read ran past its budget of {budget_s * 1000:g} ms", slow=True) from None
            if isinstance(exc.orig, dbapi.OperationalError) and _busy(exc.orig):
                raise ReadOverBudget("the database is busy") from None
            self._drop_inline()  # anything else: the next inline read starts on a fresh connection
            raise
        finally:
            if self._inline is not None:
                conn.set_progress_handler(None, 0)

    @staticmethod
    def after_commit(conn: Connection, key: str, callback: Callable[[], None]) -> None:
        """Run `callback` after the write transaction of `conn` commits (the last one under `key` wins)."""
        callbacks: dict[str, Callable[[], None]] | None = conn.info.get(_AFTER_COMMIT)
        if callbacks is None:
            raise RuntimeError("after_commit needs a connection from Database.write()")
        callbacks[key] = callback

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        fd = self._writer_lock_fd
        if fd is None or fcntl is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (no transaction is held open beyond the block)."""
        with self.engine.connect() as conn:
            yield conn


class _Plan:
    """A prebuilt statement compiled once per dialect: its SQL, bind names in order, bind and result processors."""

    __slots__ = ("_expanded", "compiled", "converters", "direct", "expanding", "result_keys", "stmt")

    def __init__(self, stmt: sa.Executable, compiled: Any, dialect: Any) -> None:
        self.stmt = stmt  # held so that the cache key (its id) is never reused by another object
        self.compiled = compiled
        # A SELECT's result keys (as `Result.keys()` names them) and each column's result processor.
        columns = compiled._result_columns
        self.result_keys: list[str] = [c.keyname for c in columns]
        self.converters: list[Callable[[Any], Any] | None] = [
            c.type._cached_result_processor(dialect, None) for c in columns
        ]
        # Columns filled by Python-side defaults, RETURNING, anything SQLAlchemy fetches or computes
        # around the statement, or result values it converts (a DateTime read back): those stay with it.
        self.direct = not (
            getattr(compiled, "insert_prefetch", None)
            or getattr(compiled, "update_prefetch", None)
            or getattr(compiled, "postfetch", None)
            or getattr(compiled, "returning", None)
            or getattr(compiled, "effective_returning", None)
            or any(self.converters)
        )
        self.expanding = bool(compiled.post_compile_params or compiled.literal_execute_params)
        # An expanding statement's SQL and argument recipe by the lengths of its lists (few: one per number of
        # projects a caller may read, say); SQLAlchemy renders the SQL again on every execution.
        self._expanded: dict[tuple[int, ...], tuple[str, list[tuple[str, str, int | None, Any, Any]]]] = {}

    def bind(self, params: Mapping[str, Any]) -> tuple[str, Any]:
        """The SQL and driver arguments of this statement with `params`, bind processors applied (what
        `construct_expanded_state` or `construct_params` give): a list for a positional driver (SQLite), a
        dict for a named one (psycopg); an expanding statement is not rendered again for list lengths seen
        before."""
        compiled = self.compiled
        if not self.expanding:
            values = compiled.construct_params(params)
            if compiled.positional:
                return compiled.string, _bound(compiled.positiontup, values, compiled._bind_processors)
            return compiled.string, _bound_named(values, compiled._bind_processors)
        lists = sorted(b.key for b in compiled.post_compile_params)
        lengths = tuple(len(params[k]) if k in params else -1 for k in lists)
        recipe = self._expanded.get(lengths)
        if recipe is None:
            state = compiled.construct_expanded_state(params)
            if compiled.literal_execute_params or 0 in lengths or -1 in lengths:
                # an empty list renders an empty-set expression; literal values are rendered into the SQL
                if compiled.positional:
                    return state.statement, _bound(state.positiontup, state.parameters, state.processors)
                return state.statement, _bound_named(state.parameters, state.processors)
            where = {e: (name, i) for name, es in state.parameter_expansion.items() for i, e in enumerate(es)}
            steps = []
            # positional: one argument per placeholder, in order; named: one per expanded parameter name
            for n in state.positiontup if compiled.positional else list(state.parameters):
                name, index = where.get(n, (n, None))
                # a value the statement holds itself (not a parameter of this call) is taken from it
                own = compiled.binds[name].effective_value if name in compiled.binds else None
                steps.append(
                    (n, name, index, state.parameters[n] if name not in params else own, state.processors.get(n))
                )
            recipe = (state.statement, steps)
            if len(self._expanded) < 64:
                self._expanded[lengths] = recipe
        sql, steps = recipe
        pairs = []
        for key, name, index, own, proc in steps:
            value = params.get(name, own)
            if index is not None:
                value = value[index]
            pairs.append((key, proc(value) if proc is not None else value))
        if compiled.positional:
            return sql, [value for _, value in pairs]
        return sql, dict(pairs)

    def convert(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Driver rows as `Connection.execute` gives them: each value through its column's result processor."""
        if not any(self.converters):
            return rows
        return [tuple(v if f is None else f(v) for f, v in zip(self.converters, row, strict=True)) for row in rows]


_PLANS: dict[tuple[int, str, tuple[str, ...]], _Plan] = {}
_PLANS_LOCK = threading.Lock()
_MAX_PLANS = 256


def _bound(names: Sequence[str] | None, values: Mapping[str, Any], procs: Mapping[str, Any]) -> list[Any]:
    """Positional driver arguments: each named value, through its bind processor if it has one."""
    return [procs[n](values[n]) if n in procs else values[n] for n in names or ()]


def _bound_named(values: Mapping[str, Any], procs: Mapping[str, Any]) -> dict[str, Any]:
    """Named driver arguments: each value, through its bind processor if it has one."""
    return {k: procs[k](v) if k in procs else v for k, v in values.items()}


def _busy(exc: BaseException) -> bool:
    """Whether a SQLite error says the database is locked or busy (another connection's lock)."""
    name = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return str(name).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _plan(dialect: Any, stmt: sa.Executable, keys: tuple[str, ...]) -> _Plan:
    key = (id(stmt), dialect.name, keys)
    plan = _PLANS.get(key)
    if plan is None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys) or None)  # type: ignore[attr-defined]
        plan = _Plan(stmt, compiled, dialect)
        with _PLANS_LOCK:
            if len(_PLANS) >= _MAX_PLANS:  # meant for statements built once; a caller building one per call
                _PLANS.clear()  # must not grow this without bound
            plan = _PLANS.setdefault(key, plan)
    return plan


def _through_sqlalchemy(
    conn: Connection, stmt: sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
) -> list[tuple[Any, ...]]:
    result = conn.execute(stmt, params)  # type: ignore[arg-type]
    return [tuple(r) for r in result] if result.returns_rows else []


def driver_execute(
    conn: Connection, stmt: sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
) -> list[tuple[Any, ...]]:
    """Run a statement built once at import (a module constant) and return its rows as tuples.

    On SQLite the SQL SQLAlchemy compiles for it (compiled once per shape; an expanding IN list is
    expanded per call as SQLAlchemy does) runs on the driver's cursor of `conn`, inside its transaction,
    with SQLAlchemy's own bind processors applied to the parameters: the same SQL and the same stored
    values, without SQLAlchemy's per-execution work (measured: about 20 us of CPU per statement, against
    6 us). A driver error is raised as SQLAlchemy would raise it (`sqlalchemy.exc.DBAPIError` subclasses),
    so `Database.write` drops a failed writer connection as before. A list of parameter sets runs as one
    `executemany`. Elsewhere (PostgreSQL), or for a statement SQLAlchemy must fill or read back (Python-side
    defaults, RETURNING), it goes through `conn.execute` as usual.
    """
    many = params is not None and not isinstance(params, Mapping)
    sets: Sequence[Mapping[str, Any]] = [params or {}] if isinstance(params, Mapping) or params is None else params
    if many and not sets:
        return []
    if conn.dialect.name != "sqlite":
        return _through_sqlalchemy(conn, stmt, params)
    plan = _plan(conn.dialect, stmt, tuple(sorted(sets[0])) if isinstance(stmt, sa.ValuesBase) else ())
    if not plan.direct or (plan.expanding and len(sets) > 1):
        return _through_sqlalchemy(conn, stmt, params)
    if plan.expanding:  # one parameter set (checked above)
        sql, one = plan.bind(sets[0])
        args = [one]
    else:  # one SQL text for every parameter set
        compiled = plan.compiled
        sql = compiled.string
        args = [_bound(compiled.positiontup, compiled.construct_params(p), compiled._bind_processors) for p in sets]
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, args)
            return []
        cursor.execute(sql, args[0])
        rows: list[tuple[Any, ...]] = list(cursor.fetchall()) if cursor.description is not None else []
        return rows
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, args if many else args[0], exc, dbapi.Error) from exc
    finally:
        cursor.close()


def _sqlite_hooks(engine: Engine, *, immediate: bool, synchronous: str) -> None:
    # pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the real one:
    # writers take the database lock up front (BEGIN IMMEDIATE) instead of failing at commit.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
