"""The registry store: engine set-up, short transactions, patients, and object reads.

One `Registry` per process. SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for
writes (so two writers queue instead of failing with "database is locked" on lock
upgrade); PostgreSQL gets a pooled engine. Everything here is keyed by patient.
"""

from __future__ import annotations

import fcntl
import functools
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Row, bindparam, create_engine, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError

from ..metadata.datatypes import CX
from ..metadata.model import AnyObject
from . import entry_index, patients, schema
from .batches import chunks
from .indexing import object_from_row

_T = TypeVar("_T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x70617274616765   # "partage": the advisory lock serialising migrations
_HOST = socket.gethostname()[:32]   # with the process and thread: a durability_marks row
_MARKS = schema.durability_marks
# Built once: every PostgreSQL request that wrote ends with it (Registry._flush_wal).
_BUMP_MARK = pg_insert(_MARKS).values(writer=bindparam("writer"), bumps=1).on_conflict_do_update(
    index_elements=[_MARKS.c.writer], set_={"bumps": _MARKS.c.bumps + 1})


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:  # pragma: no cover - driver callback
        dbapi_connection.isolation_level = None   # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit writes the WAL without fsync, holding the write lock only that long;
        # `Registry.write` then fsyncs the WAL, one fsync shared by the commits waiting for it
        # (`GroupSync`), before anyone is told the data is written.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:  # pragma: no cover - driver callback
        mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("partage_write") else "BEGIN"
        conn.exec_driver_sql(mode)


ENGINES = ("sqlite", "postgresql")


def url_problem(url: str) -> str:
    """Why the registry cannot live at `url` ("" when it can): not a database URL, or an engine
    it does not run on. The URL is not repeated (it may hold a password)."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        return "not a database URL (sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DATABASE)"
    if backend not in ENGINES:
        return f"{backend} is not supported: the registry runs on SQLite or PostgreSQL"
    return ""


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10, pool_timeout: int = 30,
                pool_recycle: int = 1800, deadline: dict[str, str] | None = None) -> Engine:
    """`deadline`: PostgreSQL settings every connection starts with (`deadline_settings`)."""
    problem = url_problem(url)
    if problem:
        raise ValueError(problem)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_setup(engine)
        return engine
    # A plan per execution, never a prepared statement's generic plan: the registry's data is
    # skewed by patient (most have a few documents, some thousands), and the generic plan chosen
    # after five executions of a statement suits the average patient, not the heavy one (a page of
    # a 2 000-document patient took 4 ms per lineage query with it, 0.4 ms with its own plan).
    # psycopg's automatic server-side preparation is off too: with a plan per execution it saves
    # only the parse, and prepared statements are session state that PgBouncer's transaction
    # pooling cannot carry (docs/deployment.md).
    # No JIT compilation: the registry's statements read a few index entries, but on a big
    # table the planner's estimate (a foreign partition's above all, estimated from its size)
    # passes jit_above_cost, and compiling then took 5 ms of a 7 ms FindDocuments at 1 million
    # documents over 2 shards (benchmarks/bench_sharded.py, EXPLAIN ANALYZE).
    # The request path's deadline (`deadline_settings`) is each connection's too: set when it
    # connects, it costs no statement per transaction.
    options = ["plan_cache_mode=force_custom_plan", "jit=off",
               *(f"{name}={value}" for name, value in (deadline or {}).items())]
    connect_args: dict[str, Any] = {"options": " ".join(f"-c {o}" for o in options)}
    if parsed.get_driver_name() == "psycopg":
        connect_args["prepare_threshold"] = None
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout,
                           pool_recycle=pool_recycle, connect_args=connect_args)
    _ping_when_idle(engine)
    return engine


# A pooled connection used this recently is not pinged when taken again (HikariCP's
# "alive bypass window", the same 500 ms): under load the ping was one round trip in seven
# of a FindDocuments. A connection that died meanwhile (a restarted server) fails the
# request that holds it; SQLAlchemy then invalidates the whole pool, and the next requests
# connect anew.
PING_AFTER_IDLE_S = 0.5


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pre-ping, for connections idle longer than PING_AFTER_IDLE_S only."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["partage_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get("partage_used_at")
        if used is None or time.monotonic() - used < PING_AFTER_IDLE_S:
            return   # new (just connected), or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:   # any failure: this connection is not to be used
            raise DisconnectionError(f"idle connection failed its ping: {exc.__class__.__name__}") from exc


class GroupSync:
    """Group commit for SQLite: one fsync of the WAL for every commit that waits for it.

    A writer calls `sync()` after its commit. The first waiter becomes the leader and fsyncs
    the file; the others wait. A commit made while a leader's fsync runs waits for the next
    one (its frames may have been written after the fsync began), so each caller returns only
    once an fsync that began after its commit has ended: durable against power loss, with one
    fsync per group instead of one per commit inside the write lock (`synchronous=FULL`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._issued = 0      # tickets handed to committed writers
        self._synced = 0      # every ticket up to this one is on disk
        self._leading = False

    def sync(self) -> None:
        with self._cond:
            self._issued += 1
            mine = self._issued
            while self._synced < mine:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading, upto = True, self._issued
                try:
                    self._cond.release()
                    try:
                        self._fsync()
                    finally:
                        self._cond.acquire()
                    self._synced = max(self._synced, upto)
                finally:
                    self._leading = False
                    self._cond.notify_all()

    def _fsync(self) -> None:
        """fsync the WAL by name: it is recreated after a checkpoint resets it. No WAL file means
        everything was checkpointed, and a checkpoint syncs the database file itself."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class WriterQueue:
    """SQLite writers wait their turn in the kernel, not in SQLite's busy handler.

    Two processes (gunicorn workers) writing one SQLite file contend for its write lock;
    the loser of `BEGIN IMMEDIATE` sleeps in SQLite's busy handler, which backs off (1, 2, 5,
    ... 25, 50, 100 ms) and wakes long after the lock is free: a queue of submissions then
    waits tens of milliseconds each. So a writer first takes an exclusive `flock` on a file
    beside the database (the kernel wakes the next waiter at once when it is released), then
    begins; SQLite's own lock still decides, this only orders who asks. The lock file is
    opened once per process (a descriptor inherited over fork would share its lock with the
    parent); threads of one process queue on a mutex first. A turn taken again by the thread
    that holds it nests (the outer one keeps the lock): a nested write then meets SQLite's own
    lock and its busy timeout, an error, never a wait on itself.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.RLock()
        self._depth = 0   # turns held by the thread holding the mutex
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._mutex:
            fd = self._descriptor()
            if self._depth == 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        return self._fd


class ForkGuard:
    """No fork of this process while it holds a database connection.

    A forked child inherits SQLite's in-process lock table: forked while a thread of the
    parent is inside a write (the MLLP listener in the gunicorn master, when a worker is
    spawned), the child believes a sibling holds the write lock and every write of the child
    waits for it until the busy timeout. A pooled PostgreSQL socket shared by two processes
    is no better. So a fork waits for the transactions in progress, holds new ones back,
    closes the pool, and lets them go on once the fork is done.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._active = 0
        self._forking = False
        ref = weakref.ref(self)
        os.register_at_fork(before=lambda: _call(ref, ForkGuard._before_fork),
                            after_in_parent=lambda: _call(ref, ForkGuard._after_fork),
                            after_in_child=lambda: _call(ref, ForkGuard._after_fork))

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _before_fork(self) -> None:
        with self._cond:
            self._forking = True
            while self._active:
                self._cond.wait()
        self.engine.dispose()   # nothing checked out: closes every pooled connection

    def _after_fork(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()


def _call(ref: weakref.ReferenceType[ForkGuard], hook: Callable[[ForkGuard], None]) -> None:
    guard = ref()
    if guard is not None:
        hook(guard)


def deadline_settings(statement_timeout: float, lock_timeout: float) -> dict[str, str]:
    """PostgreSQL's settings bounding each statement of a request's transaction (0 = no bound).

    A statement past `statement_timeout` (a lock wait included) is cancelled, and one waiting
    `lock_timeout` for a lock held by another session (an idle-in-transaction client, an
    operator's ALTER) fails: SQLSTATE 57014 / 55P03, an OperationalError, which every door
    answers as the database's outage (503 + Retry-After, `failures.classify`); the transaction
    rolls back. On a sharded registry the coordinator's backend, cancelled while it waits for a
    shard, sends the shard a cancel request and gives the shard's connection up when it is not
    answered (postgres_fdw), so a frozen shard ends the statement too (docs/robustness.md)."""
    out = {}
    for name, seconds in (("statement_timeout", statement_timeout), ("lock_timeout", lock_timeout)):
        if seconds > 0:
            out[name] = str(max(1, round(seconds * 1000)))   # milliseconds
    return out


@functools.lru_cache(maxsize=1)
def _migration_scripts() -> ScriptDirectory:
    """The migrations, loaded once per process (a fresh database is migrated one step per
    transaction: reloading the scripts at each step tripled the time of creating one)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


class Registry:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, statement_timeout: float = 0.0, lock_timeout: float = 0.0, **pool: int) -> None:
        """`pool`: make_engine's pool_size, max_overflow, pool_timeout, pool_recycle (PostgreSQL).

        `statement_timeout`, `lock_timeout` (seconds, 0 = none; PostgreSQL): the deadline of each
        statement of the transactions handed out here (`deadline_settings`). The server's
        registry has them (the request path: `Services.open(..., bounded=True)`); the command
        line's, migrations and bulk loads do not."""
        self.url = url
        self._deadline = deadline_settings(statement_timeout, lock_timeout)
        self._lifted = {name: "0" for name in self._deadline}   # SET LOCAL: no deadline (migrations, bulk loads)
        self.engine = make_engine(url, deadline=self._deadline, **pool)
        self._write_engine = self.engine.execution_options(partage_write=True)
        # Reads see one state of the registry for the whole transaction (a FindDocuments' three
        # statements, a page's dozen): REPEATABLE READ on PostgreSQL, as SQLite's read
        # transactions and postgres_fdw's remote ones already are; a read-only transaction
        # never fails on a serialization conflict, and the level costs no round trip (psycopg
        # sends it with the BEGIN).
        self._read_engine = self.engine if self.engine.dialect.name == "sqlite" else \
            self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._fork_guard = ForkGuard(self.engine)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        database = self.engine.url.database if self.is_sqlite else None
        on_disk = bool(database and database != ":memory:")
        self._group_sync = GroupSync(Path(f"{database}-wal")) if on_disk else None
        self._writers = WriterQueue(Path(f"{database}-writer")) if on_disk else None
        self._migrate_lock = threading.Lock()
        # The read transaction `snapshot()` opened in this context, shared by the reads inside it.
        self._shared: ContextVar[Connection | None] = ContextVar(f"partage_snapshot_{id(self)}", default=None)
        # Inside `one_sync()`: whether a write committed there still waits for its fsync.
        self._deferred: ContextVar[list[bool] | None] = ContextVar(f"partage_sync_{id(self)}", default=None)

    # --- lifecycle -------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision (alembic), so old databases open.

        One migration per transaction: a migration that changes a sharded coordinator's shards
        does so on its own connections to them, which would wait for ever on the locks an earlier
        migration of the same transaction took there through postgres_fdw. Several hosts may
        start at once: each transaction first takes the migration's advisory lock (transaction-
        scoped, as PgBouncer's transaction pooling needs), so one host migrates, the others wait,
        then find the revision moved on. No statement deadline (the request path's,
        `deadline_settings`) applies to a migration."""
        script = _migration_scripts()
        head = script.get_current_head()
        with self._migrate_lock:
            while True:
                with self._write_engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        self._set_local(conn, self._lifted)
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                    if MigrationContext.configure(conn).get_current_revision() == head:
                        return
                    # alembic's `command.upgrade(cfg, "+1")`, on the scripts loaded once
                    cfg = Config()
                    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
                    cfg.attributes["connection"] = conn
                    with EnvironmentContext(cfg, script, destination_rev="+1",
                                            fn=lambda rev, _context: script._upgrade_revs("+1", rev)):
                        script.run_env()

    def dispose(self) -> None:
        self.engine.dispose()

    def status(self) -> dict[str, str]:
        try:
            with self.read() as conn:
                conn.exec_driver_sql("SELECT 1")
            return {"backend": self.engine.dialect.name, "status": "ok"}
        except Exception as exc:  # health must answer, not raise
            return {"backend": self.engine.dialect.name, "status": f"error: {exc.__class__.__name__}"}

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction; inside `snapshot()`, the snapshot's own."""
        shared = self._shared.get()
        if shared is not None:
            yield shared
            return
        with self._fork_guard.held(), self._read_engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction for every read made inside it (in this thread or task): a page
        built from several reads takes one connection and one transaction instead of one each.
        Every read inside it sees one state of the registry (read transactions are REPEATABLE
        READ on PostgreSQL, a shard's too). Writes (`write()`) are not affected."""
        if self._shared.get() is not None:
            with self.read() as conn:
                yield conn
            return
        with self._fork_guard.held(), self._read_engine.connect() as conn, conn.begin():
            token = self._shared.set(conn)
            try:
                yield conn
            finally:
                self._shared.reset(token)

    @staticmethod
    def conflicted(exc: BaseException) -> bool:
        """Did this transaction fail on a serialization conflict (SQLSTATE 40001)? A sharded
        registry's shards run their part of a transaction in REPEATABLE READ (postgres_fdw):
        a row changed by a concurrent transaction since is refused there instead of read anew.
        The transaction run again from the start sees the other's outcome."""
        orig = getattr(exc, "orig", None)
        return getattr(orig, "sqlstate", None) == "40001"

    def writing(self, work: Callable[[Connection], _T]) -> _T:
        """`work` in one write transaction (`write()`), run once more from the start if it met
        a serialization conflict (`conflicted`): the second run sees what the other committed
        and answers by it (a refusal, usually) instead of a 503."""
        try:
            with self.write() as conn:
                return work(conn)
        except DBAPIError as exc:
            if not self.conflicted(exc):
                raise
        with self.write() as conn:
            return work(conn)

    @contextmanager
    def write(self, *, closing: bool = False, unbounded: bool = False) -> Iterator[Connection]:
        """One all-or-nothing transaction: commit on success, roll back on any error. On return
        the commit is on disk (PostgreSQL: synchronous_commit; SQLite: `GroupSync`), or, inside
        `one_sync()`, will be before that scope ends.

        `closing`: a request's last write, which always writes a row (the audit record). On
        PostgreSQL it commits synchronously inside `one_sync()` too: that flushes the WAL past
        every earlier commit of the request, which then needs no flush of its own.

        `unbounded`: without the registry's statement deadline (a bulk load's batches)."""
        deferred = self._deferred.get()
        unflushed = deferred is not None and not self.is_sqlite and not closing
        local = dict(self._lifted) if unbounded and not self.is_sqlite else {}
        if unflushed:
            local["synchronous_commit"] = "off"   # one_sync() flushes at its end
        with self._fork_guard.held(), self._turn(), self._write_engine.connect() as conn, conn.begin():
            self._set_local(conn, local)
            yield conn
        if deferred is not None:
            # what one_sync() must still make durable at its end, before any answer goes out
            deferred[0] = True if self.is_sqlite else unflushed
        elif self._group_sync is not None:
            self._group_sync.sync()

    @staticmethod
    def _set_local(conn: Connection, settings: dict[str, str]) -> None:
        """These settings for this transaction only (SET LOCAL), in one round trip; none on SQLite."""
        if settings:
            conn.exec_driver_sql("SELECT " + ", ".join(f"set_config('{name}', '{value}', true)"
                                                       for name, value in settings.items()))

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This writer's turn (SQLite on disk: `WriterQueue`; PostgreSQL queues writers itself)."""
        if self._writers is None:
            yield
            return
        with self._writers.turn():
            yield

    @contextmanager
    def rehearsal(self) -> Iterator[Connection]:
        """A write transaction rolled back whatever happens: proves that writes would succeed
        (the same locks, triggers and rights) and leaves nothing, with nothing to make durable."""
        with self._fork_guard.held(), self._turn(), self._write_engine.connect() as conn:
            transaction = conn.begin()
            try:
                yield conn
            finally:
                transaction.rollback()

    @contextmanager
    def one_sync(self) -> Iterator[None]:
        """The writes made inside are made durable together, once, when it ends (even by an
        error). The WAL is written in commit order, so one fsync after the last commit holds
        every earlier one: a request that commits its credential use, its registration and
        its audit record pays one fsync, shared with the requests ending at the same time.

        PostgreSQL: the writes inside commit with `synchronous_commit = off` (visible at once,
        flushed later), and the scope ends with one synchronous commit (`_flush_wal`), which
        returns once the WAL is on disk up to itself, hence past each of them. SQLite on disk:
        one `GroupSync`. What was committed inside is visible to other readers a moment before
        it is durable, as with SQLite's `synchronous=NORMAL`; what is answered is durable."""
        if (self._group_sync is None and self.is_sqlite) or self._deferred.get() is not None:
            yield
            return
        token = self._deferred.set([False])
        try:
            yield
        finally:
            wrote = self._deferred.get()
            self._deferred.reset(token)
            if wrote and wrote[0]:
                if self._group_sync is not None:
                    self._group_sync.sync()
                else:
                    self._flush_wal()

    def _flush_wal(self) -> None:
        """A synchronous commit that writes WAL (this thread's row of `durability_marks`): it
        waits for the flush of the WAL up to its own commit record, which follows every commit
        this thread made before (PostgreSQL writes one WAL, in order). A commit that wrote no
        WAL would not wait."""
        writer = f"{_HOST}:{os.getpid()}:{threading.get_ident() % 10**12}"
        with self._fork_guard.held(), self._write_engine.connect() as conn, conn.begin():
            conn.execute(_BUMP_MARK, {"writer": writer})

    # --- patients (partage.registry.patients) ----------------------------------------
    def patient_pk(self, conn: Connection, cx: CX | None) -> int | None:
        """The surviving patient behind an identifier, or None if the feed never sent it."""
        return patients.patient_pk(conn, cx)

    def active_patient_pk(self, conn: Connection, cx: CX | None) -> int | None:
        """The patient of an identifier that may take new documents (not merged away), or None."""
        return patients.active_patient_pk(conn, cx)

    def upsert_patient(self, conn: Connection, identifiers: Iterable[CX],
                       demographics: dict[str, Any] | None = None) -> int:
        return patients.upsert(conn, identifiers, demographics)

    def merge_patients(self, conn: Connection, surviving: CX, merged: CX) -> int:
        """ITI-8 A40 in the caller's transaction; on a sharded registry, call `settle_merge`
        in another once it has committed."""
        return patients.merge(conn, surviving, merged)

    def settle_merge(self, merged: CX) -> int:
        """A merge's second step (patients.settle_merge), in its own transaction; nothing to do,
        and no transaction, on SQLite (never sharded)."""
        if self.is_sqlite:
            return 0
        with self.write() as conn:
            return patients.settle_merge(conn, merged)

    # --- object reads ----------------------------------------------------------------
    def objects_by_uuid(self, conn: Connection, uuids: Iterable[str]) -> dict[str, AnyObject]:
        uuids = list(dict.fromkeys(uuids))
        objs = schema.registry_objects
        out: dict[str, AnyObject] = {}
        for chunk in chunks(uuids):
            for row in conn.execute(select(objs.c.entry_uuid, objs.c.body).where(
                    objs.c.entry_uuid.in_(chunk), *entry_index.route(conn, chunk))):
                out[row.entry_uuid] = object_from_row(row.body)
        return out

    @staticmethod
    def rows_by_uuid(conn: Connection, uuids: Iterable[str], *, lock: bool = False) -> dict[str, Row[Any]]:
        """Whole registry rows by entryUUID (on a sharded registry, from their patients' shards).
        `lock`: rows a write checks and then changes (the target of a replacement, a status
        change), locked until it commits, so that a concurrent one waits and sees the outcome
        (PostgreSQL; SQLite has one writer)."""
        objs = schema.registry_objects
        uuids = list(dict.fromkeys(uuids))
        rows: dict[str, Row[Any]] = {}
        for chunk in chunks(uuids):
            statement = select(objs).where(objs.c.entry_uuid.in_(chunk), *entry_index.route(conn, chunk))
            for row in conn.execute(statement.with_for_update() if lock else statement):
                rows[row.entry_uuid] = row
        return rows

