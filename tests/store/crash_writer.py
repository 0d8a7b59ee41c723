"""The writer that tests/store/test_crash.py kills: appends batches to a SQLite store forever.

Run as `python -m tests.store.crash_writer PATH SEED`. It opens (or creates) the
store, resumes every log from its head, prints `ready`, then loops: sign a batch
for one or both logs, append it, and only after `append` returns print one line
`LOGHEX:SEQ ...` with the heads it reached. A line on stdout is therefore a promise
that those events are durable; the parent checks the promise after SIGKILL.
"""

from __future__ import annotations

import asyncio
import random
import sys

from federation.core import canonical
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.log import descriptor_bytes
from federation.store.sqlite import SqliteStore

KEY = SigningKey(canonical.sha256(b"crash test signing key"))
GENESIS = canonical.encode_genesis(
    Genesis(KEY.public, canonical.sha256(b"crash test recovery key"), 0)
)
CLUB = canonical.club_id(GENESIS)
DESCRIPTORS = [descriptor_bytes(CLUB, name, Audience(name)) for name in ("federation", "public")]
LOGS = [canonical.log_id(d) for d in DESCRIPTORS]
MAX_BATCH = 40


def authorized(club: bytes, key: bytes) -> bool:
    return club == CLUB and key == KEY.public


async def write_forever(path: str, seed: int) -> None:
    rng = random.Random(seed)
    store = await SqliteStore.open(path, create=True)
    await store.put_club(CLUB, GENESIS)
    heads: dict[bytes, Head | None] = {}
    for log, descriptor in zip(LOGS, DESCRIPTORS, strict=True):
        await store.put_log(log, descriptor)
        record = await store.log(log)
        assert record is not None
        heads[log] = record.head
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        batch: list[VerifiedEvent] = []
        touched = rng.sample(LOGS, rng.randint(1, len(LOGS)))
        for log in touched:
            for _ in range(rng.randint(1, MAX_BATCH)):
                head = heads[log]
                seq = 1 if head is None else head.seq + 1
                event = sign_event(
                    KEY,
                    club=CLUB,
                    log=log,
                    head=head,
                    time_us=seq,
                    kind=Kind.NOTE,
                    payload=rng.randbytes(rng.randint(0, 2000)),
                )
                batch.append(event)
                heads[log] = Head(seq, event.id)
        rng.shuffle(touched)  # interleave logs differently from batch to batch
        await store.append(batch)
        line = " ".join(f"{log.hex()}:{head.seq}" for log, head in heads.items() if head)
        sys.stdout.write(line + "\n")  # one short write: a pipe never splits it
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(write_forever(sys.argv[1], int(sys.argv[2])))
