"""Attacks on a round of several events answers (protocol.md §6.2-§6.4), each taken
by an Ingest of its own (node/follow.py `_take`), and on what its runs store.

A frontier of more than MAX_FRONTIER_LOGS logs is asked for in several wants: each
answer's offers and new-log quota stand for it alone, what earlier answers took counts
as held, and each answer's commits are made durable when it ends, or at a
failure. Mallory (tests/attacks/paged.py) pages its frontier by PAGE logs, so a few
logs make several answers, and tampers with them; a is a real node on loopback.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest

from federation.cli.peering import cmd_sync
from federation.core import canonical
from federation.core import keys as k
from federation.core.canonical import Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.payloads import make_payload
from federation.errors import InvalidEventError, PeerUnavailableError, RemoteProtocolError
from federation.node import peering
from federation.node.follow import sync_round
from federation.sync.messages import Batch, ClubInfo, LogInfo, Message
from federation.sync.quota import Limits
from tests.attacks.paged import PAGE, PagedRelay, Tamper, batches, small_pages
from tests.attacks.relay import RelayedLog, head_of, one_event_logs
from tests.attacks.relay import standard_log as log_of
from tests.conftest import BASE_TIME_US, Club
from tests.harness import Federation, serve_app
from tests.store.test_durability import synced as synced  # the fsync spy (fixture)
from tests.sync.hostile_support import Held, bounded, held, rows, sync

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a"], tls=False, follow=False) as fed:
        yield fed


@pytest.fixture
async def mallory(fed: Federation) -> AsyncIterator[PagedRelay]:
    peer = PagedRelay(Club.make(b"mallory"), "Mallory")
    peer.logs = {}
    async with serve_app(peer.app()) as port:
        peer.url = f"http://127.0.0.1:{port}"
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].refresh()
        with small_pages():
            yield peer


def two_answers(first: Club, second: Club) -> tuple[list[RelayedLog], list[RelayedLog]]:
    """Two one-event logs of each club, `first`'s sorting before `second`'s: with PAGE
    logs a want, the first answer holds `first`'s logs and the second `second`'s."""
    xs = sorted(one_event_logs(first, 8), key=lambda r: r.id)[:PAGE]
    ys = sorted(one_event_logs(second, 8), key=lambda r: r.id)[-PAGE:]
    assert xs[-1].id < ys[0].id
    return xs, ys


def entitled(before: Held, kept: Sequence[RelayedLog]) -> Held:
    return {**before, **{r.id: rows(r.events) for r in kept}}


# --- offers stand for their answer only -------------------------------------------

X, Y = Club.make(b"answer one"), Club.make(b"answer two")
XS, YS = two_answers(X, Y)


def offer_early(n: int, sent: list[Message]) -> list[Message]:
    """Y's club offered in answer 1 (X's logs leave room for one more club), and not
    again in answer 2, where Y's logs are described."""
    if n == 1:
        return [ClubInfo(Y.id, Y.genesis), *sent]
    return [m for m in sent if not isinstance(m, ClubInfo)]


def describe_early(n: int, sent: list[Message]) -> list[Message]:
    """A log of answer 2 described at the end of answer 1."""
    if n == 1:
        return [*sent[:-1], LogInfo(YS[0].id, YS[0].descriptor), sent[-1]]
    return sent


def events_late(n: int, sent: list[Message]) -> list[Message]:
    """A log of answer 1 described there, its events sent only in answer 2."""
    if n == 1:
        return [m for m in sent if not (isinstance(m, Batch) and m.log == XS[0].id)]
    return [Batch(XS[0].id, [(e.signed, e.payload) for e in XS[0].events]), *sent]


@pytest.mark.parametrize(
    ("tamper", "error", "kept", "answers"),
    [
        (offer_early, "log of a club whose genesis was not given", XS, 2),
        (describe_early, "a log we did not ask for", XS, 1),
        (events_late, "events of a log we did not ask for", XS[1:], 2),
    ],
    ids=["club-early", "log-early", "events-late"],
)
async def test_what_one_answer_offered_is_not_taken_in_the_next(
    fed: Federation,
    mallory: PagedRelay,
    tamper: Tamper,
    error: str,
    kept: list[RelayedLog],
    answers: int,
) -> None:
    """A club offered, or a log described, in one answer stands for it alone: the next
    answer cannot lean on it (an Ingest an answer, and the session's want per answer).
    What verified before the refusal is kept; nothing of Y is."""
    a = fed["a"]
    mallory.relay(XS + YS)
    before = await held(a)
    mallory.tamper = tamper
    with pytest.raises((InvalidEventError, RemoteProtocolError), match=error):
        await sync(a, mallory.club.id)
    assert len(mallory.wants) == answers
    assert await held(a) == entitled(before, kept)
    assert Y.id not in {r.club for r in await a.node.store.logs()}
    mallory.tamper = None  # the control: the honest answers are all taken
    assert (await sync(a, mallory.club.id)).complete
    assert await held(a) == entitled(before, XS + YS)


# --- quotas over the answers of a round -------------------------------------------


@pytest.mark.parametrize("quota", ["logs_per_club", "logs_held", "clubs_held"])
async def test_the_held_quotas_count_what_earlier_answers_took(
    fed: Federation, mallory: PagedRelay, quota: str
) -> None:
    """Six new logs in three answers, three of them allowed: per club, in total, or
    as new clubs. What one answer took counts as held in the next (`Runtime.quota`),
    so splitting logs over answers gets a peer no more than one answer would; the
    refusal is lasting, and the next round asks for none of them."""
    a = fed["a"]
    rt = a.service.rt
    held_now = rt.quota()
    if quota == "logs_per_club":
        relayed = one_event_logs(Club.make(b"one club"), 6)
        rt.limits = Limits(logs_per_club=3)
        why = "the club holds 3 logs here"
    elif quota == "logs_held":
        relayed = [r for i in range(3) for r in one_event_logs(Club.make(b"q%d" % i), 2)]
        rt.limits = Limits(logs_held=held_now.logs + 3)
        why = f"this node holds {held_now.logs + 3} logs, its quota"
    else:
        relayed = [one_event_logs(Club.make(b"c%d" % i), 1)[0] for i in range(6)]
        rt.limits = Limits(clubs_held=held_now.clubs + 3)
        why = f"this node holds {held_now.clubs + 3} clubs, its quota"
    mallory.relay(relayed)
    before = await held(a)

    result = await sync(a, mallory.club.id)

    after = await held(a)
    kept = [r for r in relayed if r.id in after]
    assert len(kept) == 3
    assert after == entitled(before, kept)
    answers = [sum(w.log in after for w in want.logs) for want in mallory.wants]
    assert len(answers) == 3
    assert sum(n > 0 for n in answers) >= 2, answers  # the count went on over answers
    assert len(result.warnings) == 1
    assert why in result.warnings[0]
    wants = len(mallory.wants)
    again = await sync(a, mallory.club.id)  # refused for good: not asked for again
    assert (again.added, len(mallory.wants)) == (0, wants)
    assert await held(a) == after


# --- a failure in a later answer --------------------------------------------------


def forged(event: VerifiedEvent) -> VerifiedEvent:
    """The event with its signature's last byte changed."""
    signed = event.signed[:-1] + bytes([event.signed[-1] ^ 1])
    return VerifiedEvent(event.id, event.header, signed, event.payload)


def three_answers(club: Club) -> list[RelayedLog]:
    """Five logs of `club`, the last (by id) a chain of six whose fourth event is
    forged: with PAGE logs a want, it is in the round's third answer."""
    last = max(
        (log_of(club, club.chain(6, audience=aud), aud) for aud in ("federation", "public")),
        key=lambda r: r.id,
    )
    earlier = [r for r in one_event_logs(club, 40) if r.id < last.id][:4]
    assert len(earlier) == 4
    events = [*last.events[:3], forged(last.events[3]), *last.events[4:]]
    return [*earlier, RelayedLog(club, last.id, last.descriptor, events)]


async def test_a_failure_in_the_third_answer_keeps_the_first_two_durable(
    fed: Federation, mallory: PagedRelay, synced: list[str]
) -> None:
    """Answers 1 and 2 verify; answer 3 holds a log whose fourth event is forged.
    The round fails naming it; answers 1-2 and the valid prefix of 3 are kept and made
    durable; nothing from the forgery on is stored."""
    a = fed["a"]
    logs = three_answers(mallory.club)
    mallory.relay(logs)
    before = await held(a)
    synced.clear()
    with pytest.raises(InvalidEventError, match="bad signature") as failed:
        await sync(a, mallory.club.id)
    assert len(mallory.wants) == 3
    assert any(p.endswith("-wal") for p in synced)  # the spy sees make_durable
    synced.clear()
    await a.node.store.make_durable()
    assert synced == []  # nothing the round committed was left undurable
    bad = logs[-1]
    after = await held(a)
    assert after == entitled(before, logs[:-1]) | {bad.id: rows(bad.events[:3])}
    # `federation sync` (the same round again) records the failure in the peer's status.
    out = await cmd_sync(argparse.Namespace(node=str(a.root), peer="Mallory", json=True))
    assert out.exit_code == 1
    [peer] = [p for p in await a.node.store.peers() if p.club == mallory.club.id]
    assert peer.status.last_error == str(failed.value)
    assert "seq 4" in peer.status.last_error, peer.status.last_error
    assert await held(a) == after


# --- a key event between a club's logs ------------------------------------------

K = Club.make(b"rotating club")
K1 = SigningKey(canonical.sha256(b"rotating club's next key"))


def rotation(marks: list[RelayedLog]) -> RelayedLog:
    """K's keys log: one rotation from K's genesis key to K1, whose cut keeps event 1
    of each log in `marks` (protocol.md §2.2)."""
    cut = [k.CutMark(r.id, r.events[0].id, 1, r.events[0].id) for r in marks]
    padding = bytes(range(256))[: k.CUT_ENTRY_BYTES] * k.padding_entries(len(cut))
    fields: dict[str, object] = {
        "action": "rotate",
        "key": K1.public.hex(),
        "revoked": K.key.public.hex(),
        "cut": [e.hex() for e in k.seal_cut(1, cut, padding)],
    }
    event = sign_event(
        K.key,
        club=K.id,
        log=k.key_log_id(K.id),
        head=None,
        time_us=BASE_TIME_US + 5_000_000,
        kind=Kind.KEY,
        payload=make_payload(Kind.KEY, fields),
    )
    return RelayedLog(K, k.key_log_id(K.id), k.key_log_descriptor(K.id), [event])


def second(r: RelayedLog, key: SigningKey) -> RelayedLog:
    """The log with a second event, signed by `key`."""
    event = sign_event(
        key,
        club=K.id,
        log=r.id,
        head=head_of(r.events),
        time_us=BASE_TIME_US + 9_000_000,
        kind=Kind.NOTE,
        payload=b'{"text":"after the cut"}',
    )
    return RelayedLog(K, r.id, r.descriptor, [*r.events, event])


@pytest.mark.parametrize("later", ["old key", "new key"])
async def test_a_rotation_between_answers_applies_to_both_sides(
    fed: Federation, mallory: PagedRelay, later: str
) -> None:
    """One log per answer: A (before the keys log, by id), the keys log, B (after it).
    A's second event is signed by K's old key after the cut: verified in answer 1,
    not yet committed, it is moved out when answer 2's rotation is taken. B's second,
    in answer 3: the old key's is refused there; the new key's (the control) is taken."""
    a = fed["a"]
    keys = k.key_log_id(K.id)
    logs = one_event_logs(K, 20)
    first = max((r for r in logs if r.id < keys), key=lambda r: r.id)
    last = min((r for r in logs if r.id > keys), key=lambda r: r.id)
    relayed = [
        second(first, K.key),
        rotation([first, last]),
        second(last, K.key if later == "old key" else K1),
    ]
    mallory.relay(relayed)
    before = await held(a)
    with small_pages(1):
        if later == "old key":
            with pytest.raises(InvalidEventError, match="seq 2") as refused:
                await sync(a, mallory.club.id)
            assert "key" in str(refused.value)
        else:
            assert (await sync(a, mallory.club.id)).held_apart == 1
    assert len(mallory.wants) == 3
    kept = {first.id: rows(first.events), keys: rows(relayed[1].events)}
    kept[last.id] = rows((last if later == "old key" else relayed[2]).events)
    assert await held(a) == {**before, **kept}
    [apart] = await a.node.store.held_apart()
    assert (apart.log, apart.seq, apart.signed) == (first.id, 2, relayed[0].events[1].signed)


# --- a peer that says `more` forever ----------------------------------------------


async def test_more_forever_one_event_at_a_time_is_bounded_by_the_deadline(
    fed: Federation, mallory: PagedRelay
) -> None:
    """Each answer moves the head by one event and says `more` (so the no-progress rule
    never fires): the round's deadline ends it, naming the peer; every event that came
    is kept, as sent, and the next round goes on from there."""
    a = fed["a"]
    club = mallory.club
    chain = log_of(club, club.chain(400), "federation")
    mallory.relay([chain])
    mallory.step = 2  # the overlap and one new event an answer
    client = a.service.client(club.id)
    start = time.monotonic()
    with pytest.raises(PeerUnavailableError, match=r"Mallory.*deadline"):
        await bounded(sync_round(a.service.rt, client, known=None, wait_s=0, deadline_s=1.5))
    assert time.monotonic() - start < 3.0
    got = (await held(a))[chain.id]
    assert 3 <= len(got) < 400  # several answers came, and all it sent was kept
    assert got == rows(chain.events[: len(got)])
    assert len(mallory.wants) >= len(got) - 2
    mallory.step = None  # the control: an honest answer finishes the log
    assert (await sync(a, club.id)).complete
    assert (await held(a))[chain.id] == rows(chain.events)


async def test_a_log_refused_for_good_is_not_asked_again_within_the_round(
    fed: Federation, mallory: PagedRelay
) -> None:
    """A peer that says `more` after each event of a log brings the round back to its
    frontier again and again; a log the node refused for good in the first answer
    (its club at its quota) must not be asked for, and warned about, in every one."""
    a = fed["a"]
    club = mallory.club
    chain = log_of(club, club.chain(8), "federation")
    junk = one_event_logs(Club.make(b"over its quota"), 2)
    a.service.rt.limits = Limits(logs_per_club=1)
    mallory.relay([chain, *junk])
    mallory.step = 2
    result = await sync(a, club.id)
    assert (await held(a))[chain.id] == rows(chain.events)
    assert len(mallory.wants) >= 5  # the round went back to the frontier each time
    refused = [r.id for r in junk if r.id not in await held(a)]
    assert len(refused) == 1
    asked = [w for want in mallory.wants for w in want.logs if w.log == refused[0]]
    assert len(asked) == 1, f"asked {len(asked)} times"
    assert len(result.warnings) == 1, result.warnings


# --- payload sizes in long runs (the store's INSERT_RUN path) ----------------------

RUN = 40  # over sqlite_write.RUN_STATEMENT_EVENTS: one INSERT_RUN statement a batch
FULL = canonical.MAX_PAYLOAD_BYTES


def sized(i: int, shape: str) -> bytes | None:
    """The payload of event i of a run of this shape (None: sent without it)."""
    if shape == "empty":
        return b""
    if shape == "empty-and-missing":
        return None if i % 2 else b""
    return [b"", b"x" * FULL, None, b"{}", b"y" * (FULL - 1)][i % 5]  # "every-size"


@pytest.mark.parametrize(
    ("shape", "n"),
    [("every-size", RUN), ("empty", RUN - 9), ("empty", RUN), ("empty-and-missing", RUN)],
    ids=["every-size", "empty-short", "empty-long", "empty-and-missing-long"],
)
async def test_payloads_of_every_size_are_stored_as_sent(
    fed: Federation, mallory: PagedRelay, shape: str, n: int
) -> None:
    """Payloads of 0 and MAX_PAYLOAD_BYTES bytes, and events sent without theirs, in
    runs long enough for one INSERT_RUN statement, land byte for byte (read back
    raw); 'empty-short' (row by row) is the control."""
    a = fed["a"]
    club = mallory.club
    payloads = [sized(i, shape) for i in range(n)]
    signed = club.chain(n, payloads=[p or b"" for p in payloads])
    events = [
        VerifiedEvent(e.id, e.header, e.signed, p) for e, p in zip(signed, payloads, strict=True)
    ]
    sent = log_of(club, events, "federation")
    mallory.relay([sent])
    assert (len(batches([(e.signed, e.payload) for e in events])[0]) >= 32) == (n >= RUN)
    result = await sync(a, club.id)
    assert result.added == n
    assert (await held(a))[sent.id] == rows(events)


def oversized(club: Club, after: Head) -> VerifiedEvent:
    """A validly signed event of MAX_PAYLOAD_BYTES + 1 bytes (sign_event makes none)."""
    payload = b"z" * (FULL + 1)
    header = msgspec.structs.replace(
        club.chain(1, after=after)[0].header,
        payload_hash=canonical.sha256(payload),
        payload_size=len(payload),
    )
    body = canonical.encode_header(header)
    signed = body + club.key.sign(body)
    return VerifiedEvent(canonical.event_id(signed), header, signed, payload)


async def test_a_payload_over_the_limit_is_refused_and_the_run_before_it_kept(
    fed: Federation, mallory: PagedRelay
) -> None:
    a = fed["a"]
    club = mallory.club
    good = club.chain(RUN, payloads=[b"x" * FULL if i % 3 else b"" for i in range(RUN)])
    sent = log_of(club, [*good, oversized(club, head_of(good))], "federation")
    mallory.relay([sent])
    with pytest.raises(InvalidEventError, match=f"payload size {FULL + 1} is over the limit"):
        await sync(a, club.id)
    assert (await held(a))[sent.id] == rows(good)
