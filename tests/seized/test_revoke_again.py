"""A revocation is made once: `federation key revoke` run again after one that finished
(or that another command finished, `Node.open`) refuses, naming the revocation, and
revokes nothing; `--again` revokes the key that revocation put in, when it was seized
too (protocol.md §2.2, node/keys.py `revocation_target`).

Without the refusal a rerun revoked the club's fresh key: every peer follows, the key
dies and its events after the point are held apart. Or, on a node whose key file is
older than the revocation, it put a second revocation at the same keys-log seq: a fork
of the keys log, frozen everywhere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation.core.canonical import Audience, Kind, sha256
from federation.core.crypto import SigningKey
from federation.core.events import Head, sign_event
from federation.core.ids import short
from federation.core.keys import CUT_ENTRY_BYTES, key_log_id, padding_entries, seal_cut
from federation.core.payloads import make_payload
from federation.errors import UsageError
from federation.node import keys as node_keys
from federation.node.keyfile import PASSPHRASE_ENV
from federation.node.node import Node
from federation.store.base import ForkRecord
from tests.harness import Federation
from tests.keys.support import RECOVERY, keys_in, public_log, start_club, texts
from tests.seized.support import PASSPHRASE, Run, cli, ok
from tests.seized.test_interrupted import (
    KILL_ATTEMPTS,
    POLL_S,
    RESTORE_S,
    Club,
    cut_off,
    make_club,
)


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


State = tuple[bytes, list[bytes], bool]


def key_state(root: Path) -> State:
    """What a revocation changes: the key file's bytes, the ids of the club's key events
    as held, and whether a staged key is left."""

    async def go() -> list[bytes]:
        async with await Node.open(root) as node:
            return [e.id for e in await node.store.events(key_log_id(node.club))]

    return (root / "club.key").read_bytes(), asyncio.run(go()), (root / "club.key.next").exists()


def revocation(root: Path, seq: int) -> tuple[int, bytes]:
    """The time and key of the epoch the key event at keys-log `seq` began."""

    async def go() -> tuple[int, bytes]:
        async with await Node.open(root) as node:
            history = node.keys.history(node.club)
            assert history is not None
            [epoch] = [e for e in history.epochs if e.n == seq]
            assert epoch.action == "revoke"
            return epoch.time_us, epoch.key

    return asyncio.run(go())


def when(time_us: int) -> str:
    return dt.datetime.fromtimestamp(time_us / 1e6, dt.UTC).isoformat("T", "seconds")


def already_revoked(root: Path, seq: int) -> str:
    """The one line a rerun gets, for the revocation at keys-log `seq`."""
    time_us, key = revocation(root, seq)
    return (
        f"federation: error: the club's key was already revoked at {when(time_us)} (seq "
        f"{seq} of its keys log, new key {short(key)}, in this node's key file): nothing "
        f"was changed. If key {short(key)} was seized too, run `federation key revoke "
        "--again` to revoke it as well"
    )


def words(club: Club, *more: str) -> list[str]:
    return ["key", "revoke", "--words-file", str(club.words), *more]


def refused(run: Run, line: str) -> None:
    assert run.code == 2, (run.out, run.err)
    assert run.error_line == line
    assert run.out == ""


def epochs(club: Club, capsys: pytest.CaptureFixture[str]) -> list[str]:
    status = ok(cli(capsys, club.root, "key", "status", "--json")).json()
    return [e["action"] for e in status["epochs"]]


def test_a_revoke_cut_off_after_its_event_and_finished_by_status_is_not_run_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    club = make_club(tmp_path, capsys)
    first = key_state(club.root)
    names = cut_off(club, 3)
    assert names[2] == "append the key event"
    ok(cli(capsys, club.root, "status"))  # opening the node finishes the revocation
    done = key_state(club.root)
    # Positive control: the first revocation changed the key file and the keys log.
    assert done[0] != first[0]
    assert len(done[1]) == len(first[1]) + 1
    assert done[2] is False
    # The same command again, as the operator who saw it killed runs it: refused.
    line = already_revoked(club.root, 1)
    refused(cli(capsys, club.root, *words(club, "--before", club.before)), line)
    refused(cli(capsys, club.root, *words(club)), line)  # from the heads: the same
    assert key_state(club.root) == done
    assert epochs(club, capsys) == ["genesis", "revoke"]


def test_a_finished_revoke_run_again_is_refused_and_again_revokes_the_new_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    club = make_club(tmp_path, capsys)
    ok(cli(capsys, club.root, *words(club, "--before", club.before)))
    done = key_state(club.root)
    line = already_revoked(club.root, 1)
    refused(cli(capsys, club.root, *words(club)), line)
    assert key_state(club.root) == done
    # The new key was seized too: --again revokes it. A --before older than the key
    # (the point the first revocation named) would void the genesis key's events
    # before it too: refused, one line, nothing changed.
    old = cli(capsys, club.root, *words(club, "--again", "--before", club.before))
    assert old.code == 2
    assert f"is before key {short(revocation(club.root, 1)[1])} was put in" in old.error_line
    assert key_state(club.root) == done
    result = ok(cli(capsys, club.root, *words(club, "--again", "--json"))).json()
    assert result["seq"] == 2
    assert result["old"] == revocation(club.root, 1)[1].hex()
    assert epochs(club, capsys) == ["genesis", "revoke", "revoke"]
    again = key_state(club.root)
    assert again[0] != done[0]
    assert again[1][:1] == done[1]
    # The node signs with the third key, and a third plain rerun is refused in turn.
    ok(cli(capsys, club.root, "post", "note", "--log", "minutes", "--text", "third key"))
    assert ok(cli(capsys, club.root, "verify", "--json")).json()["ok"] is True
    refused(cli(capsys, club.root, *words(club)), already_revoked(club.root, 2))


def test_an_old_key_file_is_not_revoked_twice_into_a_forked_keys_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file older than the club's revocation (a copy kept from before it): its
    key was revoked already, and a second revocation of it would sit at the same seq."""
    club = make_club(tmp_path, capsys)
    kept = (club.root / "club.key").read_bytes()
    ok(cli(capsys, club.root, *words(club)))
    new_key = revocation(club.root, 1)[1]
    (club.root / "club.key").write_bytes(kept)
    stale = key_state(club.root)
    run = cli(capsys, club.root, *words(club))
    assert run.code == 2
    assert run.error_line.startswith("federation: error: key ")
    assert "in this node's key file was already revoked at" in run.error_line
    assert f"new key {short(new_key)}); revoking it twice would fork" in run.error_line
    assert f"If key {short(new_key)} was seized too" in run.error_line
    assert key_state(club.root) == stale
    # --again revokes the key the revocation put in, after it: no fork.
    result = ok(cli(capsys, club.root, *words(club, "--again", "--json"))).json()
    assert (result["old"], result["seq"]) == (new_key.hex(), 2)
    assert epochs(club, capsys) == ["genesis", "revoke", "revoke"]
    assert ok(cli(capsys, club.root, "verify", "--json")).json()["ok"] is True
    ok(cli(capsys, club.root, "post", "note", "--log", "minutes", "--text", "signs again"))


def test_a_fork_signed_by_the_new_key_lets_the_revocation_go_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Evidence that the new key signs elsewhere too: a fork of one of the club's logs
    (§3.6) with a branch signed by it, as a peer's sync brings from a copy of it."""
    club = make_club(tmp_path, capsys)
    ok(cli(capsys, club.root, *words(club)))
    ok(cli(capsys, club.root, "post", "note", "--log", "minutes", "--text", "ours"))
    refused(cli(capsys, club.root, *words(club)), already_revoked(club.root, 1))  # control

    async def fork() -> None:
        async with await Node.open(club.root) as node:
            key = node.unlock()
            record = await node.own_log(Audience("private"), "minutes")
            assert record.head is not None
            held = await node.store.event_at(record.id, record.head.seq)
            assert held is not None
            theirs = sign_event(
                key,
                club=node.club,
                log=record.id,
                head=Head(held.header.seq - 1, held.header.prev),
                time_us=node.clock(),
                kind=Kind.NOTE,
                payload=b'{"text":"the copy\'s"}',
            )
            seq = record.head.seq
            now = node.clock()
            await node.store.record_fork(
                ForkRecord(node.club, record.id, seq, held.signed, theirs.signed, now)
            )

    asyncio.run(fork())
    run = ok(cli(capsys, club.root, *words(club, "--json")))
    assert run.json()["seq"] == 2
    assert epochs(club, capsys) == ["genesis", "revoke", "revoke"]


def test_a_seizers_rotation_of_the_new_key_lets_the_revocation_go_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other evidence: a key event after the revocation that this node did not make
    (its key file would hold the key it hands over to), here a seizer's rotation signed
    by the new key, as a sync brings it. The revocation replaces it, at its seq."""
    club = make_club(tmp_path, capsys)
    ok(cli(capsys, club.root, *words(club)))

    async def seizer_rotates() -> bytes:
        async with await Node.open(club.root) as node:
            seized = node.unlock()
            keys_log = await node.own_log(Audience("public"), "keys")
            ours = await node.store.event_at(keys_log.id, 1)
            assert ours is not None
            theirs = SigningKey(sha256(b"the seizer's own key"))
            cut = seal_cut(2, [], bytes(padding_entries(0) * CUT_ENTRY_BYTES))
            fields: dict[str, object] = {"action": "rotate", "key": theirs.public.hex()}
            fields |= {"revoked": seized.public.hex(), "cut": [e.hex() for e in cut]}
            rotation = sign_event(
                seized,
                club=node.club,
                log=keys_log.id,
                head=Head(1, ours.id),
                time_us=node.clock(),
                kind=Kind.KEY,
                payload=make_payload(Kind.KEY, fields),
            )
            await node.store.append([rotation])
            return rotation.id

    rotation = asyncio.run(seizer_rotates())
    assert epochs(club, capsys) == ["genesis", "revoke", "rotate"]
    result = ok(cli(capsys, club.root, *words(club, "--json"))).json()
    assert (result["old"], result["seq"]) == (revocation(club.root, 1)[1].hex(), 2)
    assert epochs(club, capsys) == ["genesis", "revoke", "revoke"]
    assert rotation not in key_state(club.root)[1]  # held apart, in the seizer's place
    ok(cli(capsys, club.root, "post", "note", "--log", "minutes", "--text", "third key"))


def test_a_revoke_killed_then_started_otherwise_is_made_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For real: `key revoke` SIGKILLed once its staged key is on disk and the store has
    been written since (its key event, if the kill came late enough), then `status`,
    then the same `key revoke` again, and again: wherever the kill found it, exactly
    one revocation is made, and the run after it is refused."""
    for attempt in range(KILL_ATTEMPTS):
        club = make_club(tmp_path / str(attempt), capsys)
        command = [sys.executable, "-m", "federation", "--node", str(club.root), *words(club)]
        staged, wal = club.root / "club.key.next", club.root / "store.sqlite-wal"
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + RESTORE_S
        written: int | None = None
        while process.poll() is None and time.monotonic() < deadline:
            size = wal.stat().st_size if wal.exists() else 0
            if written is None and staged.exists():
                written = size
            elif written is not None and size != written:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(POLL_S / 10)
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        _, err = process.communicate(timeout=RESTORE_S)
        if process.returncode == -signal.SIGKILL:
            break
        assert process.returncode == 0, err.decode()
    else:
        pytest.fail(f"every one of {KILL_ATTEMPTS} revocations ended before it was killed")
    ok(cli(capsys, club.root, "status"))
    made = epochs(club, capsys)
    # The append is the first write after the staged key, so the kill nearly always
    # finds the key event written (`status` finished the revocation); if not, the
    # rerun makes it, and the run after that is the rerun to refuse.
    if made == ["genesis"]:
        ok(cli(capsys, club.root, *words(club)))
    else:
        assert made == ["genesis", "revoke"]
    done = key_state(club.root)
    refused(cli(capsys, club.root, *words(club)), already_revoked(club.root, 1))
    assert key_state(club.root) == done
    assert epochs(club, capsys) == ["genesis", "revoke"]
    assert done[2] is False
    assert ok(cli(capsys, club.root, "verify", "--json")).json()["ok"] is True


async def test_a_deliberate_second_revocation_is_followed_by_peers(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["b"], tls=False) as fed:
        a = await start_club(fed, tmp_path, "a")
        await fed.federate("a", "b")
        log = public_log(a.club)
        b = fed["b"].node.store
        await a.post(Kind.NOTE, {"text": "first key"}, "public")
        first = await node_keys.revoke(a.node, RECOVERY)
        await a.service.rt.refresh()
        await a.post(Kind.NOTE, {"text": "second key, kept"}, "public")
        await asyncio.sleep(0.002)
        point = a.node.clock()
        await a.post(Kind.NOTE, {"text": "second key, seized"}, "public")
        await a.service.rt.refresh()

        async def held_at_b(n: int, keys: int) -> bool:
            return len(await texts(b, log)) == n and len(await keys_in(b, a.club)) == keys

        await fed.wait_for(lambda: held_at_b(3, 1), what="b follows the first revocation")
        # Run again by mistake: refused, nothing changed, nothing for b to follow.
        key_events = [e.id for e in await keys_in(a.node.store, a.club)]
        with pytest.raises(UsageError, match="the club's key was already revoked at"):
            await node_keys.revoke(a.node, RECOVERY, before_us=point)
        assert [e.id for e in await keys_in(a.node.store, a.club)] == key_events
        assert a.node.key_in_file().public == first.new
        # Seized too: --again, from the point before the seizer's note.
        second = await node_keys.revoke(a.node, RECOVERY, before_us=point, again=True)
        assert (second.old, second.seq) == (first.new, 2)
        assert sum(second.dropped.values()) == 1  # the seizer's note, held apart here
        await a.service.rt.refresh()
        await a.post(Kind.NOTE, {"text": "third key"}, "public")
        await a.service.rt.refresh()
        expected = ['{"text":"first key"}', '{"text":"second key, kept"}', '{"text":"third key"}']

        async def followed() -> bool:
            return await texts(b, log) == expected and len(await keys_in(b, a.club)) == 2

        await fed.wait_for(followed, what="b follows the second revocation")
        assert [h.seq for h in await b.held_apart() if h.log == log] == [3]
        rt = fed["b"].service.rt
        assert not rt.authorized(a.club, first.new)
        assert rt.authorized(a.club, second.new)


def test_an_old_key_file_does_not_revoke_over_a_later_hand_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file older than the club's revocation, and the key that revocation put in
    handed over since (a rotation): from here no revocation can tell the club's own
    rotation from a seizer's, so none is made, --again or not; the line says where to
    run it."""
    club = make_club(tmp_path, capsys)
    kept = (club.root / "club.key").read_bytes()
    ok(cli(capsys, club.root, *words(club)))
    ok(cli(capsys, club.root, "key", "rotate"))
    assert epochs(club, capsys) == ["genesis", "revoke", "rotate"]
    (club.root / "club.key").write_bytes(kept)
    stale = key_state(club.root)
    for extra in ((), ("--again",)):
        run = cli(capsys, club.root, *words(club, *extra))
        assert run.code == 2, run.err
        assert "was handed over since (seq 2 of the club's keys log" in run.error_line
        assert "run `key revoke` on the node that holds one of those keys" in run.error_line
        assert key_state(club.root) == stale
    assert epochs(club, capsys) == ["genesis", "revoke", "rotate"]
