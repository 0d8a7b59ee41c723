"""Every example of protocol.md §5-§8 decodes and verifies (HOUSE_STYLE, Tests).

The ```vector blocks of protocol.md are parsed strictly (tests.protocol_vectors),
then each is checked two ways: recomputed from its own inputs (seeds, fields) with
hashlib, a small MessagePack encoder written from the spec and the layout tables of
the document, and decoded and verified with federation (core, sync, archive). A
malformed block, a missing vector type or a value that does not recompute fails the
test. The tables of limits (§6.4) and error codes (§7) are checked against the code.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
from types import ModuleType

import pytest

from federation import service
from federation.core import canonical, invite, selection
from federation.core.canonical import RequestToken
from federation.core.crypto import SigningKey, verify_signature
from federation.core.events import Head, KeyCheck, verify_event, verify_run
from federation.core.log import parse_audience
from federation.errors import RemoteProtocolError, UsageError
from federation.node import archive, follow, ingest, runtime
from federation.store.memory import MemoryStore
from federation.sync import auth, messages, quota, serve
from federation.sync.messages import Batch, FrameReader, Frontier, LogHead, Want, WantLog
from federation.sync.session import Session, State
from federation.web import client, limits, peer_api
from tests.protocol_doc_support import (
    ROOT,
    authorised,
    check_layout,
    doc_table,
    document_blocks,
    of_type,
)
from tests.protocol_vectors import (
    CERTIFICATE_STAND_IN,
    Block,
)


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return document_blocks()


# --- §5-§8: invites, request tokens, selection, messages, limits, errors, export ---------


def mp(value: object) -> bytes:
    """A minimal MessagePack encoder, shortest forms, written from the spec (§6.7)."""
    if value is None:
        return b"\xc0"
    if value is False:
        return b"\xc2"
    if value is True:
        return b"\xc3"
    if isinstance(value, int):
        assert 0 <= value < 1 << 64
        if value < 128:
            return bytes([value])
        code, size = next(
            (c, s) for c, s in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)) if value < 1 << 8 * s
        )
        return bytes([code]) + value.to_bytes(size, "big")
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) < 32:
            return bytes([0xA0 | len(raw)]) + raw
        return _sized(len(raw), (0xD9, 1), (0xDA, 2), (0xDB, 4)) + raw
    if isinstance(value, bytes):
        return _sized(len(value), (0xC4, 1), (0xC5, 2), (0xC6, 4)) + value
    if isinstance(value, list):
        head = (
            bytes([0x90 | len(value)])
            if len(value) < 16
            else _sized(len(value), (0xDC, 2), (0xDD, 4))
        )
        return head + b"".join(mp(v) for v in value)
    if isinstance(value, dict):
        head = (
            bytes([0x80 | len(value)])
            if len(value) < 16
            else _sized(len(value), (0xDE, 2), (0xDF, 4))
        )
        return head + b"".join(mp(k) + mp(v) for k, v in value.items())
    raise TypeError(f"mp cannot encode {type(value).__name__}")


def _sized(n: int, *forms: tuple[int, int]) -> bytes:
    code, size = next((c, s) for c, s in forms if n < 1 << 8 * s)
    return bytes([code]) + n.to_bytes(size, "big")


def _club_a(blocks: list[Block]) -> Block:
    return next(b for b in of_type(blocks, "genesis") if b.label == "club A")


def _by_label(blocks: list[Block], kind: str, label: str) -> Block:
    found = [b for b in of_type(blocks, kind) if b.label == label]
    assert len(found) == 1, f"protocol.md has no vector {kind} {label!r}"
    return found[0]


def test_invite(blocks: list[Block]) -> None:
    geneses = {b.hex("club"): b for b in of_type(blocks, "genesis")}
    for b in of_type(blocks, "invite"):
        text = b.get("text")
        found = invite.read_invite(text)  # decodes and checks everything (§5.1)
        assert (found.genesis, found.name, found.url, found.fingerprint, found.signature) == (
            b.get("genesis"),
            b.get("name"),
            b.get("url"),
            b.get("fingerprint"),
            b.get("signature"),
        )
        club = b.hex("club")
        assert found.club == club == hashlib.sha256(b.hex("genesis")).digest()
        genesis = geneses[club]
        assert genesis.hex("genesis") == b.hex("genesis")
        assert b.hex("fingerprint") == hashlib.sha256(CERTIFICATE_STAND_IN).digest()
        # The text: the prefix, then base64url of the JSON object without padding.
        assert text.startswith("fedinvite1:")
        body = text.removeprefix("fedinvite1:")
        assert "=" not in body
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert raw == b.get("json").encode()
        assert list(json.loads(raw)) == ["genesis", "name", "url", "fingerprint", "signature"]
        # The signed invite bytes, by the layout of §5.1.
        name, url, fingerprint = b.get("name").encode(), b.get("url").encode(), b.hex("fingerprint")
        signed = b"".join(
            (
                b"federation/invit",
                b"\x01",
                club,
                bytes([len(name)]),
                name,
                len(url).to_bytes(2, "big"),
                url,
                bytes([len(fingerprint)]),
                fingerprint,
            )
        )
        assert signed == b.hex("signed")
        assert canonical.encode_invite(club, b.get("name"), b.get("url"), fingerprint) == signed
        assert verify_signature(genesis.hex("key"), b.hex("signature"), signed)
        # Signing is deterministic: the reference writer makes the same text.
        key = SigningKey(hashlib.sha256(genesis.get("seed").encode()).digest())
        made = invite.make_invite(key, b.hex("genesis"), b.get("name"), b.get("url"), fingerprint)
        assert made == text
        # Another address under the same signature is refused (§5.1, step 5).
        moved = json.loads(raw)
        moved["url"] = "https://elsewhere.example:8401"
        forged = base64.urlsafe_b64encode(json.dumps(moved).encode()).decode().rstrip("=")
        with pytest.raises(UsageError, match="does not verify"):
            invite.read_invite("fedinvite1:" + forged)


def test_request(blocks: list[Block]) -> None:
    check = authorised(blocks)
    for b in of_type(blocks, "request"):
        body = b.hex("body") if b.has("body") else b""
        assert b.hex("body_hash") == hashlib.sha256(body).digest()
        scheme, space, value = b.get("authorization").partition(" ")
        assert (scheme, space) == ("Federation", " ")
        raw = base64.urlsafe_b64decode(value)
        assert base64.urlsafe_b64encode(raw).decode() == value, "base64url with its padding"
        assert raw == b.hex("signed") + b.hex("signature")
        token, signed, signature = canonical.decode_request(raw)
        assert token == RequestToken(
            sender=b.hex("sender"),
            recipient=b.hex("recipient"),
            time_us=b.int("time_us"),
            nonce=b.hex("nonce"),
            body_hash=b.hex("body_hash"),
            key=b.hex("key"),
            method=b.get("method"),
            target=b.get("target"),
        )
        assert (signed, signature) == (b.hex("signed"), b.hex("signature"))
        assert canonical.encode_request(token) == signed
        # The variable tail of §5.2, after the fixed part of the layout table.
        method, target = b.get("method").encode(), b.get("target").encode()
        fixed = canonical._REQUEST.size
        assert (
            signed[fixed:]
            == bytes([len(method)]) + method + len(target).to_bytes(2, "big") + target
        )
        assert len(raw) == fixed + 1 + len(method) + 2 + len(target) + 64
        assert check(token.sender, token.key), "the key is not the sender's genesis key"
        assert verify_signature(token.key, signature, signed)

        # The recipient's checks (§5.2), with a fixed clock and a fresh nonce memory.
        now = b.int("now_us")
        assert abs(now - token.time_us) <= auth.MAX_CLOCK_SKEW_US

        def accept(
            header: str | None = b.get("authorization"),
            *,
            replay: auth.ReplayGuard | None = None,
            recipient: bytes = token.recipient,
            method: str = token.method,
            target: str = token.target,
            body: bytes = body,
            now_us: int = now,
            authorized: KeyCheck = check,
        ) -> bytes | None:
            return auth.check(
                header,
                recipient=recipient,
                method=method,
                target=target,
                body=body,
                now_us=now_us,
                authorized=authorized,
                replay=replay or auth.ReplayGuard(),
            )

        guard = auth.ReplayGuard()
        assert accept(replay=guard) == token.sender
        with pytest.raises(RemoteProtocolError) as refused:
            accept(replay=guard)
        assert (refused.value.code, refused.value.http_status) == ("replayed", 401)
        bad_signature = (
            "Federation " + base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
        )
        # A token that does not authenticate makes an anonymous reader, as no token does:
        # no refusal tells a stranger which club runs here or whom it knows (§5.2).
        anonymous: list[dict[str, object]] = [
            {"header": "Bearer " + value},
            {"header": "Federation " + value[:-8]},
            {"recipient": token.sender},
            {"target": token.target + "&x=1"},
            {"method": "PUT"},
            {"authorized": lambda club, key: False},
            {"body": body + b"x"},
            {"header": bad_signature},
        ]
        for change in anonymous:
            assert accept(**change) is None, change  # type: ignore[arg-type]
        for now_us in (
            token.time_us + auth.MAX_CLOCK_SKEW_US + 1,
            token.time_us - auth.MAX_CLOCK_SKEW_US - 1,
        ):
            with pytest.raises(RemoteProtocolError) as refused:
                accept(now_us=now_us)
            assert (refused.value.code, refused.value.http_status) == ("expired", 401)
        assert accept(None) is None  # no Authorization: an anonymous reader (§5.4)


def test_request_layout_table(blocks: list[Block]) -> None:
    for b in of_type(blocks, "request"):
        fixed = canonical._REQUEST.size
        check_layout("request", b.hex("signed")[:fixed], canonical.REQUEST_TAG, b, fixed)


def test_requests_carry_the_documented_round(blocks: list[Block]) -> None:
    # §5.2's vectors are club B's want (§6.7) and its long-poll with the digest as known.
    want = _by_label(blocks, "want", "club B wants club A's logs")
    post = _by_label(blocks, "request", "club B asks club A for events")
    assert (post.get("method"), post.get("target")) == ("POST", peer_api.EVENTS_PATH)
    assert post.hex("body") == want.hex("message")
    frontier = _by_label(blocks, "frontier", "club A's frontier for club B")
    poll = _by_label(blocks, "request", "club B long-polls club A's frontier")
    assert poll.get("method") == "GET"
    assert not poll.has("body")
    assert poll.get("target") == (
        f"{peer_api.FRONTIER_PATH}?known={frontier.get('digest')}&wait={follow.LONG_POLL_S:g}"
    )


def _roster(blocks: list[Block], club: bytes) -> set[bytes]:
    check = authorised(blocks)
    log = selection.roster_log_id(club)
    events = sorted(
        (b for b in of_type(blocks, "event") if b.hex("log") == log), key=lambda b: b.int("seq")
    )
    verified = [verify_event(b.hex("signed_header"), b.hex("payload"), check) for b in events]
    roster: set[bytes] = set()
    assert selection.fold_roster(roster, verified), "every roster payload is held"
    return roster


def test_roster_log(blocks: list[Block]) -> None:
    a = _club_a(blocks).hex("club")
    b = next(g.hex("club") for g in of_type(blocks, "genesis") if g.label == "club B")
    roster = _by_label(blocks, "log", "club A roster log")
    assert roster.get("name") == selection.ROSTER_LOG_NAME == "roster"
    assert roster.get("audience") == "federation"
    assert roster.hex("descriptor") == selection.roster_descriptor(a)
    assert roster.hex("log") == selection.roster_log_id(a)
    assert _roster(blocks, a) == {b}


def _heads(text: str) -> list[tuple[bytes, int, bytes]]:
    heads = []
    for item in text.split(" "):
        log, seq, head = item.split(":")
        heads.append((bytes.fromhex(log), int(seq), bytes.fromhex(head)))
    return heads


def test_frontier(blocks: list[Block]) -> None:
    a = _club_a(blocks).hex("club")
    peers = frozenset(g.hex("club") for g in of_type(blocks, "genesis")) - {a}
    audiences = {
        b.hex("log"): (b.hex("club"), parse_audience(b.get("audience")))
        for b in of_type(blocks, "log")
    }
    held: dict[bytes, Block] = {}  # each log's head among the events club A holds
    for e in of_type(blocks, "event"):
        if e.hex("log") not in held or e.int("seq") > held[e.hex("log")].int("seq"):
            held[e.hex("log")] = e
    rosters = {a: frozenset(_roster(blocks, a))}
    for b in of_type(blocks, "frontier"):
        raw = b.hex("message")
        message = messages.decode(raw)
        assert isinstance(message, Frontier)
        assert message.digest == b.hex("digest")
        if b.get("logs") == "nil":  # unchanged since `known` (§6.6)
            assert not b.has("heads")
            assert message.logs is None
            assert message.digest == b.hex("known")
            assert raw == mp({"t": "frontier", "digest": message.digest, "logs": None})
            assert len(raw) == 59, "§6.6: an unchanged frontier is 59 bytes"
            continue
        assert not b.has("known")
        heads = _heads(b.get("heads"))
        assert len(heads) == b.int("logs")
        assert message.logs == [LogHead(*h) for h in heads]
        assert [log for log, _, _ in heads] == sorted(log for log, _, _ in heads)
        # The digest, by the reference (§6.6) and by hand.
        digest, log_heads = serve.frontier((log, Head(seq, head)) for log, seq, head in heads)
        assert (digest, log_heads) == (message.digest, message.logs)
        assert digest == hashlib.sha256(mp([list(h) for h in heads])).digest()
        assert raw == mp({"t": "frontier", "digest": digest, "logs": [list(h) for h in heads]})
        assert len(raw) == 59 + 70 * len(heads), "§6.6: 70 bytes a log with a short seq"
        # Exactly the logs with events that this requester may receive (§5.4).
        requester = None if b.get("requester") == "none" else b.hex("requester")
        visible = sorted(
            (log, e.int("seq"), e.hex("id"))
            for log, e in held.items()
            if selection.may_receive(
                audiences[log][1], audiences[log][0], requester, our_peers=peers, rosters=rosters
            )
        )
        assert heads == visible


def test_want(blocks: list[Block]) -> None:
    for b in of_type(blocks, "want"):
        raw = b.hex("message")
        message = messages.decode(raw)
        assert isinstance(message, Want)
        entries = []
        for item in b.get("wants").split(" "):
            log, after, limit, descriptor = item.split(":")
            assert descriptor in ("true", "false")
            entries.append(
                WantLog(bytes.fromhex(log), int(after), int(limit), descriptor == "true")
            )
        assert message.logs == entries
        wire = [[w.log, w.after, w.limit, w.descriptor] for w in entries]
        assert raw == mp({"t": "want", "logs": wire})
    # §6.2: a client holding none of club A's logs wants exactly this from that frontier.
    frontier = messages.decode(
        _by_label(blocks, "frontier", "club A's frontier for club B").hex("message")
    )
    session = Session({}, None)
    assert session.frontier_known() is None
    want = session.on_frontier(frontier)
    assert session.state is State.STREAMING
    assert want == messages.decode(
        _by_label(blocks, "want", "club B wants club A's logs").hex("message")
    )


def test_batch(blocks: list[Block]) -> None:
    check = authorised(blocks)
    events = {e.hex("id"): e for e in of_type(blocks, "event")}
    clubs = {b.hex("log"): b.hex("club") for b in of_type(blocks, "log")}
    for b in of_type(blocks, "batch"):
        raw = b.hex("message")
        message = messages.decode(raw)
        assert isinstance(message, Batch)
        assert message.log == b.hex("log")
        assert len(message.events) == b.int("count")
        ids = [bytes.fromhex(i) for i in b.get("ids").split(" ")]
        assert [hashlib.sha256(signed).digest() for signed, _ in message.events] == ids
        for (signed, payload), id_ in zip(message.events, ids, strict=True):
            assert signed == events[id_].hex("signed_header")
            assert payload == events[id_].hex("payload")
        first = canonical.decode_header(message.events[0][0]).seq
        after = None if first == 1 else Head(first - 1, events[ids[0]].hex("prev"))
        out, error = verify_run(message.log, after, message.events, check, club=clubs[message.log])
        assert error is None
        assert list(out.ids) == ids
        assert raw == mp(
            {"t": "batch", "log": message.log, "events": [list(e) for e in message.events]}
        )
        # Framing (§6.7): a u32 big-endian length, then the message.
        assert b.hex("frame_header") == len(raw).to_bytes(4, "big")
        framed = b.hex("frame_header") + raw
        assert messages.frame(message) == framed
        reader = FrameReader()
        assert list(reader.feed(framed[:100])) == []
        assert list(reader.feed(framed[100:] + messages.frame(messages.Done()))) == [
            message,
            messages.Done(),
        ]
        assert reader.at_boundary()


async def test_export(blocks: list[Block]) -> None:
    events = {e.hex("id"): e for e in of_type(blocks, "event")}
    geneses = {g.hex("club"): g for g in of_type(blocks, "genesis")}
    descriptors = {b.hex("log"): b for b in of_type(blocks, "log")}
    for b in of_type(blocks, "export"):
        names = ["club_line", "log_line"] + [
            f"event_line_{i}" for i in range(1, 10) if b.has(f"event_line_{i}")
        ]
        lines = [b.get(n) for n in names]
        club_line, log_line, *event_lines = (json.loads(line) for line in lines)
        # By hand, as §8 says.
        assert list(club_line) == ["type", "id", "genesis"]
        genesis = bytes.fromhex(club_line["genesis"])
        assert club_line["type"] == "club"
        assert hashlib.sha256(genesis).digest().hex() == club_line["id"]
        assert geneses[bytes.fromhex(club_line["id"])].hex("genesis") == genesis
        assert list(log_line) == ["type", "id", "descriptor", "name", "audience"]
        log = descriptors[b.hex("log")]
        assert (log_line["type"], log_line["id"]) == ("log", b.get("log"))
        assert bytes.fromhex(log_line["descriptor"]) == log.hex("descriptor")
        assert (log_line["name"], log_line["audience"]) == (log.get("name"), log.get("audience"))
        for seq, line in enumerate(event_lines, start=1):
            assert list(line) == ["type", "log", "seq", "id", "signed", "payload"]
            event = events[bytes.fromhex(line["id"])]
            assert (line["type"], line["log"], line["seq"]) == ("event", b.get("log"), seq)
            assert bytes.fromhex(line["signed"]) == event.hex("signed_header")
            assert hashlib.sha256(bytes.fromhex(line["signed"])).hexdigest() == line["id"]
            assert base64.b64decode(line["payload"], validate=True) == event.hex("payload")
        # By the reference: import into an empty store, export again, byte for byte.
        file = [line.encode() + b"\n" for line in lines]
        store = MemoryStore()
        report = await archive.import_lines(store, {}, file, now_us=0)
        assert (report.added, report.already, report.forks) == (len(event_lines), 0, 0)
        record = await store.log(b.hex("log"))
        assert record is not None
        out = io.BytesIO()
        assert await archive.export(store, out, [record]) == len(event_lines)
        assert out.getvalue() == b"".join(file)
        again = await archive.import_lines(store, {}, file, now_us=0)
        assert (again.added, again.already) == (0, len(event_lines)), "import is idempotent"


# --- the tables of §6.4 and §7 against the code -------------------------------------------

_LIMIT_MODULES: tuple[ModuleType, ...] = (
    messages,
    auth,
    peer_api,
    client,
    follow,
    ingest,
    runtime,
    service,
    limits,
    archive,
    quota,
)
_LIMITS_ELSEWHERE = ("MAX_REQUEST_TARGET_BYTES", "REQUEST_NONCE_BYTES", "MAX_INVITE_URL_BYTES")


def test_limits_table_names_every_sync_constant() -> None:
    constants: dict[str, float] = {name: getattr(canonical, name) for name in _LIMITS_ELSEWHERE}
    for module in _LIMIT_MODULES:
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, int | float) and not isinstance(value, bool):
                assert constants.setdefault(name, value) == value, name
    rows = doc_table("limits")
    documented = {}
    for name, value, kind, reason in rows:
        assert kind in ("protocol", "reference"), f"limit {name}: kind {kind!r}"
        assert reason, f"limit {name} gives no reason"
        documented[name.strip("`")] = float(value)
    assert set(documented) == set(constants), "§6.4 and the code name different limits"
    for name, value in documented.items():
        assert value == constants[name], f"§6.4 says {name} is {value}, the code {constants[name]}"


def _error_codes_in_code() -> tuple[set[str], set[tuple[str, int]]]:
    """Every error code the package raises, and the HTTP status given with it."""
    codes: set[str] = set()
    statuses: set[tuple[str, int]] = set()
    for path in sorted((ROOT / "federation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            code = keywords.get("code")
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                codes.add(code.value)
                status = keywords.get("http_status")
                if isinstance(status, ast.Constant) and isinstance(status.value, int):
                    statuses.add((code.value, status.value))
            # sync/auth.py refuses with refuse(why, code), always 401.
            if isinstance(node.func, ast.Name) and node.func.id == "refuse":
                arg = node.args[1]
                assert isinstance(arg, ast.Constant)
                assert isinstance(arg.value, str)
                codes.add(arg.value)
                statuses.add((arg.value, 401))
    return codes, statuses


def test_error_codes_table_matches_the_code() -> None:
    table = {code.strip("`"): status for code, status, _ in doc_table("error-codes")}
    codes, statuses = _error_codes_in_code()
    assert set(table) == codes, "§7 and the code use different error codes"
    for code, status in statuses:
        assert table[code] == str(status), (
            f"§7 gives {code} status {table[code]}, the code {status}"
        )
    assert {s for s in table.values() if not s.isdigit()} == {"client"}
