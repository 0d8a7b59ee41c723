"""The SQLite store's writes of clubs, logs and events, as plain functions of the
connection, each run whole on the store's thread (SqliteBase._write_whole).

Why on the thread, whole: a write awaited statement by statement hops back to the
event loop after each one, and waits there for whatever the loop is running (during
a bulk sync, the next batch being verified) before its next statement can start. Run
as one call, a 20,000-event commit makes one hop instead of six, and the store's
thread no longer idles behind the verifier (bench/RESULTS.md, "one hop").

Each function runs inside the caller's transaction; none commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from sqlite3 import Connection
from typing import Any

from federation.core import canonical, payloads
from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedRun
from federation.core.log import held_seq, rest_to_append
from federation.errors import InvalidEventError
from federation.store.schema import MAX_SEQ, SEQ_BITS, run_statement

# A run this long is inserted by one INSERT_RUN statement; shorter ones (a post, or
# interleaved events of several logs) row by row, where one statement's fixed cost
# would outweigh binding their rows.
RUN_STATEMENT_EVENTS = 32

# An erasure event is found in a run by the low byte of its kind: verified events
# have known kinds, all under 256.
KIND_AT = canonical.KIND_OFFSET
_KIND_LOW = KIND_AT + 1
_ERASURE_KIND = int(Kind.ERASURE)
_kind_low = itemgetter(_KIND_LOW)


def _one(db: Connection, sql: str, parameters: Sequence[Any]) -> Any:
    """The first row of a query, or None. Every row is fetched: a statement left
    stepping would stop the COMMIT ("SQL statements in progress")."""
    rows = db.execute(sql, parameters).fetchall()
    return rows[0] if rows else None


def check_not_blocked(db: Connection, clubs: Sequence[bytes]) -> None:
    """Refuse a blocked club's genesis and logs (the operator's `block`)."""
    if not clubs:
        return
    marks = ", ".join("?" * len(clubs))
    row = _one(db, f"SELECT club FROM blocked WHERE club IN ({marks})", clubs)
    if row is not None:
        raise InvalidEventError("the club is blocked on this node", club=bytes(row[0]))


def put_club(db: Connection, club: bytes, genesis: bytes) -> None:
    check_not_blocked(db, [club])
    db.execute("INSERT OR IGNORE INTO club (id, genesis) VALUES (?, ?)", (club, genesis))


def put_log(db: Connection, log: bytes, descriptor: bytes) -> None:
    if _one(db, "SELECT 1 FROM log WHERE id = ?", (log,)) is not None:
        return  # held already: the descriptor given again is ignored
    check_not_blocked(db, [canonical.decode_log(descriptor).club])
    db.execute("INSERT INTO log (id, descriptor) VALUES (?, ?)", (log, descriptor))


def append_runs(
    db: Connection,
    runs: Sequence[VerifiedRun],
    clubs: Mapping[bytes, bytes],
    logs: Mapping[bytes, bytes],
) -> tuple[int, int]:
    """store.base Store.append_runs, inside the caller's transaction. Returns how
    many payloads the appended erasure events erased (§3.5), and about how many bytes
    of events it wrote (what the Checkpointer counts)."""
    if clubs or logs:  # new clubs and logs are few: one query for them all
        named = {*clubs, *(canonical.decode_log(d).club for d in logs.values())}
        check_not_blocked(db, list(named))
    if clubs:
        db.executemany("INSERT OR IGNORE INTO club (id, genesis) VALUES (?, ?)", clubs.items())
    if logs:
        db.executemany("INSERT OR IGNORE INTO log (id, descriptor) VALUES (?, ?)", logs.items())
    if not runs:
        return 0, 0
    state = _append_state(db, runs)  # log id -> [log number, club, head], kept as we go
    rows: list[tuple[int, bytes, bytes | None]] = []  # short runs
    statements = []  # long runs, one INSERT_RUN each
    missing: list[tuple[int]] = []  # row keys of events that came payload-less
    erasures: list[tuple[int, bytes, int, bytes | None]] = []  # n, log, seq, payload
    for run in runs:
        at = state[run.log]
        seq = held_seq(run, at[2])  # None on the hot path: no lookup
        held = None if seq is None else _held_id(db, at[0], seq)
        rest = rest_to_append(run, at[2], at[1], held)  # the chain rule (§3.4)
        if rest is None:
            continue  # held already (another peer's ingest was first)
        run = rest
        head = run.head
        assert head is not None  # runs hold at least one event
        if head.seq > MAX_SEQ:
            raise InvalidEventError("seq beyond what this store holds", log=run.log)
        first = (at[0] << SEQ_BITS) | run.first
        if None in run.payloads:  # a tuple scan in C: nothing on the hot path
            missing += [(first + i,) for i, p in enumerate(run.payloads) if p is None]
        if _ERASURE_KIND in map(_kind_low, run.signed):  # a scan in C, as above
            erasures += [
                (at[0], run.log, run.first + i, run.payloads[i])
                for i, signed in enumerate(run.signed)
                if signed[_KIND_LOW] == _ERASURE_KIND
            ]
        if len(run) >= RUN_STATEMENT_EVENTS:
            statements.append(run_statement(first, run))
        else:
            keys = range(first, first + len(run))
            rows.extend(zip(keys, run.signed, run.payloads, strict=True))
        at[2] = head
    written = 0
    if rows:
        db.executemany("INSERT INTO event (k, signed, payload) VALUES (?, ?, ?)", rows)
        written += sum(len(signed) + len(payload or b"") for _, signed, payload in rows)
    for statement, parameters in statements:
        db.execute(statement, parameters)
        written += len(parameters["signed"]) + len(parameters["payloads"])  # joined: O(1)
    db.executemany(
        "UPDATE log SET head_seq = ?, head_id = ? WHERE n = ?",
        [(head.seq, head.id, n) for n, _, head in state.values()],
    )
    if missing:
        db.executemany("INSERT OR IGNORE INTO payload_missing (k) VALUES (?)", missing)
    erased = sum(apply_erasure(db, n, log, seq, payload) for n, log, seq, payload in erasures)
    return erased, written


def _held_id(db: Connection, n: int, seq: int) -> bytes | None:
    """The id of the event log number `n` holds at `seq`, if any."""
    row = _one(db, "SELECT signed FROM event WHERE k = ?", ((n << SEQ_BITS) | seq,))
    return None if row is None else canonical.event_id(row[0])


def _append_state(db: Connection, runs: Sequence[VerifiedRun]) -> dict[bytes, list[Any]]:
    """Each log's [number, club, head], read inside the write transaction."""
    logs = list(dict.fromkeys(run.log for run in runs))
    found = {
        bytes(row[0]): row[1:]
        for row in db.execute(
            "SELECT id, n, head_seq, head_id, frozen, descriptor FROM log "
            f"WHERE id IN ({', '.join('?' * len(logs))})",
            logs,
        )
    }
    state: dict[bytes, list[Any]] = {}
    for run in runs:
        if run.log in state:
            continue
        if run.log not in found:
            raise InvalidEventError("unknown log: store its descriptor first", log=run.log)
        n, head_seq, head_id, frozen, descriptor = found[run.log]
        if frozen:
            raise InvalidEventError("log is frozen after a fork", club=run.club, log=run.log)
        club = canonical.decode_log(descriptor).club
        state[run.log] = [n, club, Head(head_seq, bytes(head_id)) if head_seq else None]
    return state


def apply_erasure(db: Connection, n: int, log: bytes, seq: int, payload: bytes | None) -> int:
    """An erasure event at (log, seq) is held with `payload`: drop the payload it
    erases, if it erases one (protocol.md §3.5). Returns 1 if a payload was dropped
    or was already gone, else 0."""
    named = payloads.erasure_target(seq, payload)
    if named is None:
        return 0
    k = (n << SEQ_BITS) | named[0]
    row = _one(db, "SELECT signed FROM event WHERE k = ?", (k,))
    if row is None:
        return 0
    signed = bytes(row[0])
    kind = int.from_bytes(signed[KIND_AT : KIND_AT + 2])
    if not payloads.erases(named[0], canonical.event_id(signed), kind, named):
        return 0
    db.execute("UPDATE event SET payload = NULL WHERE k = ?", (k,))
    db.execute("DELETE FROM payload_missing WHERE k = ?", (k,))
    db.execute("INSERT OR REPLACE INTO payload_erased (k, origin) VALUES (?, 1)", (k,))
    # The views fold this log again: the erased text leaves them (node.projector).
    db.execute("DELETE FROM projection_position WHERE log = ?", (log,))
    return 1


def fill_payload(db: Connection, n: int, log: bytes, seq: int, payload: bytes) -> int | None:
    """store.base Store.fill_payload for log number `n`: None if that payload is not
    missing here (nothing changes), else how many payloads it erased (0 or 1)."""
    k = (n << SEQ_BITS) | seq
    if _one(db, "SELECT 1 FROM payload_missing WHERE k = ?", (k,)) is None:
        return None  # held, or erased by its origin or here: never stored again
    db.execute("UPDATE event SET payload = ? WHERE k = ? AND payload IS NULL", (payload, k))
    db.execute("DELETE FROM payload_missing WHERE k = ?", (k,))
    db.execute("DELETE FROM projection_position WHERE log = ?", (log,))
    return apply_erasure(db, n, log, seq, payload)
