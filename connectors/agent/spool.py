"""The agent's on-disk usage spool: SQLite (stdlib) in the agent's state folder, one file.

Why SQLite: appending a window's records and advancing the meter's watermark for that job happen in
one transaction, so after a crash or restart the agent neither loses nor repeats a window; WAL with
``synchronous=FULL`` makes each commit durable (fsync) before the meter moves on.

Tables:
* ``records(seq, id, body)``: encoded usage records, oldest first by ``seq``; ``id`` is unique, so a
  record spooled twice is kept once.
* ``subjects(subject, kind, spec, started_at, metered_until, finished_at)``: what the meter measures:
  jobs this agent started (``kind='job'``, ``spec`` their allocation) and the volumes it meters (``kind='volume'``).
* ``rejected(id, code, reason, body, at)``: the last records the gateway refused for good, to inspect.
* ``metered_jobs(job_id)``: jobs metered to their end and forgotten, so that adopting the runtime's
  jobs (``UsageMeter.adopt``) does not meter them all over again; an id leaves once the runtime no
  longer lists the job.

The schema has no version: every table is ``CREATE TABLE IF NOT EXISTS``, so a spool written by an
older agent gains the new tables when it is opened, and an empty one (a new pod) starts with all of them.

The size bound (``max_bytes`` of record bodies) is never exceeded: an append that would cross it is
refused, the meter keeps its watermark and retries later, so usage waits instead of being dropped.
Past 80 % the spool logs a warning at every further 5 %, and an error when full.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "Spool", "SpooledRecord", "Subject"]

log = logging.getLogger("metacloud.agent")

DEFAULT_MAX_BYTES = 256 << 20  # ~800k records of ~330 bytes: days of a busy cluster offline
WARN_RATIO = 0.8
_REJECTED_KEPT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (
    subject TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    started_at INTEGER,
    metered_until INTEGER,
    finished_at INTEGER
);
CREATE TABLE IF NOT EXISTS metered_jobs (
    job_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS rejected (
    id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL,
    at TEXT NOT NULL DEFAULT (datetime('now'))
);
"""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    seq: int
    id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Subject:
    """A job (or volume) the meter measures; times in epoch seconds."""

    subject: str
    kind: str  # "job" | "volume"
    spec: dict[str, Any]
    started_at: int | None
    metered_until: int | None
    finished_at: int | None


class Spool:
    """Synchronous and thread-safe; the async callers run it in a worker thread (``asyncio.to_thread``)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, logger: logging.Logger = log) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.log = logger
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM records").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        self._warned_at = 0  # the last 5 % step warned about
        self._full = False
        self._check_level()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- size ---------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def _check_level(self) -> None:
        ratio = self._bytes / self.max_bytes if self.max_bytes else 0.0
        step = int(ratio * 20)  # 5 % steps
        if ratio >= WARN_RATIO and step > self._warned_at:
            self._warned_at = step
            self.log.warning(
                "usage spool %s is %d %% full (%d records, %.1f MiB of %.0f MiB): the gateway is not taking "
                "usage uploads fast enough; when full, metering pauses (no usage is dropped) until it drains",
                self.path, int(ratio * 100), self._count, self._bytes / 2**20, self.max_bytes / 2**20)
        elif ratio < WARN_RATIO and self._warned_at:
            self._warned_at = 0
            self.log.info("usage spool back below %d %% (%d records)", int(WARN_RATIO * 100), self._count)

    # --- records ------------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[str, bytes]], *, advance: Iterable[tuple[str, int, int | None]] = ()
               ) -> bool:
        """Spool ``(id, body)`` records and, in the same transaction, set subjects' watermarks
        (``(subject, metered_until, finished_at)``). ``False`` (and nothing written) if it would
        cross the size bound."""
        size = sum(len(b) for _, b in records)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                if not self._full:
                    self._full = True
                    self.log.error(
                        "usage spool %s is full (%d records, %.0f MiB): metering is paused until uploads drain "
                        "it; check that the gateway is reachable", self.path, self._count, self._bytes / 2**20)
                return False
            if self._full:
                self._full = False
                self.log.info("usage spool has room again: metering resumes")
            with self._transaction() as cur:
                before = self._db.total_changes
                cur.executemany("INSERT OR IGNORE INTO records (id, body) VALUES (?, ?)", records)
                added = self._db.total_changes - before
                cur.executemany("UPDATE subjects SET metered_until = ?, finished_at = coalesce(?, finished_at) "
                                "WHERE subject = ?", [(until, fin, s) for s, until, fin in advance])
            if added == len(records):
                self._count += added
                self._bytes += size
            else:  # some ids were already spooled: recount rather than guess their sizes
                row = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM records").fetchone()
                self._count, self._bytes = int(row[0]), int(row[1])
            self._check_level()
            return True

    def oldest(self, limit: int) -> list[SpooledRecord]:
        with self._lock:
            rows = self._db.execute("SELECT seq, id, body FROM records ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [SpooledRecord(seq=r[0], id=r[1], body=bytes(r[2])) for r in rows]

    def remove(self, ids: Iterable[str], *, rejected: Sequence[tuple[str, str, str]] = ()) -> int:
        """Drop acknowledged records (and keep the refused ones, ``(id, code, reason)``, for inspection)."""
        with self._lock:
            with self._transaction() as cur:
                if rejected:
                    cur.executemany(
                        "INSERT OR REPLACE INTO rejected (id, code, reason, body) "
                        "SELECT id, ?, ?, body FROM records WHERE id = ?", [(c, r, i) for i, c, r in rejected])
                    cur.execute("DELETE FROM rejected WHERE id NOT IN (SELECT id FROM rejected ORDER BY at DESC "
                                "LIMIT ?)", (_REJECTED_KEPT,))
                gone = cur.execute("SELECT coalesce(sum(length(body)), 0), count(*) FROM records WHERE id IN "
                                   "(SELECT value FROM json_each(?))", (json.dumps(list(ids)),)).fetchone()
                cur.execute("DELETE FROM records WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
            self._bytes -= int(gone[0])
            self._count -= int(gone[1])
            self._check_level()
            return int(gone[1])

    def rejected(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(r[0], r[1], r[2]) for r in self._db.execute("SELECT id, code, reason FROM rejected ORDER BY at")]

    # --- subjects (what the meter measures) ----------------------------------------------------

    def subject_started(self, subject: str, kind: str, spec: dict[str, Any], started_at: int) -> None:
        """Remember a started job (idempotent: a redelivered start keeps the first record)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO subjects (subject, kind, spec, started_at) VALUES (?, ?, ?, ?)",
                             (subject, kind, json.dumps(spec, sort_keys=True), started_at))

    def subject_finished(self, subject: str, finished_at: int) -> None:
        with self._lock:
            self._db.execute("UPDATE subjects SET finished_at = coalesce(finished_at, ?) WHERE subject = ?",
                             (finished_at, subject))

    def subjects_switched(self, ended: Sequence[str], started: Sequence[tuple[str, str, dict[str, Any]]],
                          at: int) -> None:
        """End the ``ended`` subjects and start the ``started`` ones (subject, kind, spec) at the second ``at``,
        in one transaction: a volume resized is never left ended but not restarted."""
        with self._lock, self._transaction() as cur:
            cur.executemany("UPDATE subjects SET finished_at = coalesce(finished_at, ?) WHERE subject = ?",
                            [(at, subject) for subject in ended])
            cur.executemany("INSERT OR IGNORE INTO subjects (subject, kind, spec, started_at) VALUES (?, ?, ?, ?)",
                            [(subject, kind, json.dumps(spec, sort_keys=True), at) for subject, kind, spec in started])

    def subjects(self) -> list[Subject]:
        with self._lock:
            rows = self._db.execute("SELECT subject, kind, spec, started_at, metered_until, finished_at FROM subjects "
                                    "ORDER BY subject").fetchall()
        return [Subject(subject=r[0], kind=r[1], spec=json.loads(r[2]), started_at=r[3], metered_until=r[4],
                        finished_at=r[5]) for r in rows]

    def forget_subject(self, subject: str) -> None:
        """A subject metered up to its end is no longer needed (a job's id is kept in ``metered_jobs``)."""
        with self._lock, self._transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO metered_jobs (job_id) SELECT subject FROM subjects "
                        "WHERE subject = ? AND kind = 'job'", (subject,))
            cur.execute("DELETE FROM subjects WHERE subject = ?", (subject,))

    def adopt_jobs(self, jobs: Sequence[tuple[str, dict[str, Any], int]]) -> list[str]:
        """Make subjects of the runtime's jobs ``(job_id, spec, started_at)`` that are neither subjects nor
        metered to their end already; returns the ids adopted. ``jobs`` is everything the runtime holds,
        so a metered job it no longer lists will never come back: its id is dropped from ``metered_jobs``."""
        adopted = []
        with self._lock, self._transaction() as cur:
            cur.execute("DELETE FROM metered_jobs WHERE job_id NOT IN (SELECT value FROM json_each(?))",
                        (json.dumps([job_id for job_id, _, _ in jobs]),))
            for job_id, spec, started_at in jobs:
                cur.execute("INSERT OR IGNORE INTO subjects (subject, kind, spec, started_at) SELECT ?, 'job', ?, ? "
                            "WHERE NOT EXISTS (SELECT 1 FROM metered_jobs WHERE job_id = ?)",
                            (job_id, json.dumps(spec, sort_keys=True), started_at, job_id))
                if cur.rowcount == 1:
                    adopted.append(job_id)
        return adopted

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (the caller holds the lock): all of it is committed, or none."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
