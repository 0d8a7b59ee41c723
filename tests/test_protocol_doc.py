"""Every example in protocol.md decodes and verifies (HOUSE_STYLE, Tests).

The ```vector blocks of protocol.md are parsed strictly (tests.protocol_vectors),
then each is checked two ways: recomputed from its own inputs (seeds, fields) with
hashlib, a small MessagePack encoder written from the spec and the layout tables of
the document, and decoded and verified with federation (core, sync, archive). A
malformed block, a missing vector type or a value that does not recompute fails the
test. The tables of limits (§6.4) and error codes (§7) are checked against the code.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import struct

import msgspec
import pytest

from federation.core import canonical, crypto, keys
from federation.core.canonical import Genesis, Header, Kind, LogDescriptor
from federation.core.crypto import SigningKey, derive_key, open_sealed
from federation.core.events import Head, KeyCheck, VerifiedEvent, verify_event, verify_run
from federation.core.log import fork_between, format_audience, parse_audience
from federation.core.payloads import (
    PAYLOAD_TYPES,
    STRICT_PAYLOAD_TYPES,
    Erasure,
    erases,
    erasure_target,
)
from federation.errors import ForkError, InvalidEventError
from federation.node.keyfile import open_envelope, seal_envelope, seal_key
from federation.node.recovery import signing_key_from_words
from federation.views import agreement
from tests.protocol_doc_support import (
    DOC,
    ROOT,
    authorised,
    check_layout,
    doc_table,
    document_blocks,
    layout,
    load,
    of_type,
)
from tests.protocol_vectors import (
    REQUIRED,
    Block,
    VectorFormatError,
    build,
    check_hex,
    parse_blocks,
    rewrite,
)


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return document_blocks()


# --- the parser is strict ------------------------------------------------------------

H32 = "ab" * 32
GOOD = f"```vector log\nlabel: x\nclub: {H32}\nname: n\naudience: public\naudience_code: 2\n"
GOOD += f"descriptor: ab\nlog: {H32}\n```\n"


def test_parser_accepts_a_good_block() -> None:
    (block,) = [b for _, b in parse_blocks("text\n\n" + GOOD)]
    assert block.type == "log"
    assert block.get("audience") == "public"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no vectors here\n```python\nx = 1\n```\n", "no ```vector blocks"),
        (GOOD.replace("vector log", "vector logs"), "not 'vector <type>'"),
        (GOOD.replace("vector log", "vectors log"), "not 'vector <type>'"),
        (GOOD.replace("name: n\n", "name n\n"), "expected 'key: value'"),
        (GOOD.replace("name: n\n", "name: n\n\n"), "blank line"),
        (GOOD.replace("name: n\n", "name: n\nname: m\n"), "appears twice"),
        (GOOD.replace("name: n\n", "name: n\ncolour: red\n"), "unknown key"),
        (GOOD.replace("name: n\n", ""), "lacks ['name']"),
        (GOOD.replace("\n```\n", "\n"), "never closed"),
        (GOOD.replace(f"log: {H32}", f"log: {H32.upper()}"), "not lowercase hex"),
        (GOOD.replace(f"club: {H32}", f"club: {H32}a"), "not lowercase hex"),
        (GOOD.replace(f"club: {H32}", "club: abab"), "2 bytes, expected 32"),
        (GOOD.replace("audience_code: 2", "audience_code: two"), "not an integer"),
        (GOOD + GOOD, "labels repeat"),
    ],
)
def test_parser_rejects(text: str, why: str) -> None:
    with pytest.raises(VectorFormatError, match=re.escape(why)):
        load(text)


def test_hex_sizes_are_checked() -> None:
    block = Block("log", (("label", "x"), ("log", "aa")))
    with pytest.raises(VectorFormatError, match="1 bytes, expected 32"):
        check_hex(block, "log", 32)


# --- the document ----------------------------------------------------------------------


def test_every_vector_type_is_shown(blocks: list[Block]) -> None:
    assert {b.type for b in blocks} == set(REQUIRED)
    audiences = {b.get("audience").split(":")[0] for b in of_type(blocks, "log")}
    assert audiences == {"private", "federation", "public", "clubs"}
    kinds = {b.get("kind_name") for b in of_type(blocks, "event")}
    assert {"note", "action", "report", "erasure"} <= kinds
    assert {b.get("kdf") for b in of_type(blocks, "keyfile")} == {"scrypt", "none"}


def test_document_matches_the_generator(blocks: list[Block]) -> None:
    # The doc is regenerated with `python -m tests.protocol_vectors --write protocol.md`.
    built = {b.label: b for b in build()}
    assert {b.label for b in blocks} == set(built)
    for block in blocks:
        assert block == built[block.label], f"vector {block.label!r} is out of date"
    text = DOC.read_text(encoding="utf-8")
    assert rewrite(text, build()) == text


def _headings() -> set[str]:
    """Section numbers of protocol.md: "## 5. Peering" -> "5", "### 5.1 Invites" -> "5.1"."""
    text = DOC.read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", text, re.MULTILINE))


def test_sync_sections_are_written() -> None:
    assert "<!-- sync sections follow -->" not in DOC.read_text(encoding="utf-8")
    wanted = (
        {"5", "6", "7", "8"} | {f"5.{i}" for i in range(1, 6)} | {f"6.{i}" for i in range(1, 8)}
    )
    assert wanted <= _headings()


_CITATION = re.compile(r"(RFC\s+\d+\s+)?§(\d+(?:\.\d+)*)")


def test_every_cited_section_exists() -> None:
    # Within protocol.md (RFC sections aside) and wherever code cites "protocol.md §n".
    headings = _headings()
    text = DOC.read_text(encoding="utf-8")
    cited = {(m.group(2), "protocol.md") for m in _CITATION.finditer(text) if not m.group(1)}
    for folder in ("federation", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for m in re.finditer(r"protocol\.md ((?:§[\d.]+(?:, | and )?)+)", source):
                cited |= {
                    (ref.rstrip("."), str(path.relative_to(ROOT)))
                    for ref in re.findall(r"§([\d.]+)", m.group(1))
                }
    missing = sorted((ref, where) for ref, where in cited if ref not in headings)
    assert not missing, f"cited sections that protocol.md does not have: {missing}"


def test_genesis(blocks: list[Block]) -> None:
    for b in of_type(blocks, "genesis"):
        secret = b.hex("secret")
        assert secret == hashlib.sha256(b.get("seed").encode()).digest()
        key = SigningKey(secret).public
        assert key == b.hex("key")
        if b.has("recovery_seed"):
            recovery_key = SigningKey(hashlib.sha256(b.get("recovery_seed").encode()).digest())
            assert recovery_key.public == b.hex("recovery_key")
            # The 24 words encode exactly that seed (§2.1, node/recovery.py).
            from_words = signing_key_from_words(b.get("recovery_words"))
            assert from_words.secret_bytes() == recovery_key.secret_bytes()
            assert b.hex("recovery") == hashlib.sha256(recovery_key.public).digest()
        else:
            assert not b.has("recovery_key")
            assert b.hex("recovery") == bytes(32)
        genesis = b.hex("genesis")
        assert canonical.decode_genesis(genesis) == Genesis(
            key, b.hex("recovery"), b.int("time_us")
        )
        assert canonical.encode_genesis(canonical.decode_genesis(genesis)) == genesis
        assert b.hex("club") == hashlib.sha256(genesis).digest() == canonical.club_id(genesis)


def test_keyfile(blocks: list[Block]) -> None:
    keys = {b.hex("club"): b.hex("key") for b in of_type(blocks, "genesis")}
    for b in of_type(blocks, "keyfile"):
        club = b.hex("club")
        file = json.loads(b.get("json"))
        version = b.int("version") if b.has("version") else 1
        # Version 2, the key envelope, also holds the store key (§2.3).
        store_key = {"store_key"} if version == 2 else set()
        assert file["version"] == version
        assert file["club"] == b.get("club")
        assert file["kdf"] == b.get("kdf")
        if b.get("kdf") == "none":
            assert set(file) == {"version", "club", "kdf", "secret"} | store_key
            secret = bytes.fromhex(file["secret"]) + bytes.fromhex(file.get("store_key", ""))
        else:
            assert b.get("kdf") == "scrypt"
            assert set(file) == {"version", "club", "kdf", "n", "r", "p"} | {
                "salt",
                "nonce",
                "ciphertext",
            }
            for field in ("n", "r", "p"):
                assert file[field] == b.int(field)
            for field in ("salt", "nonce", "ciphertext"):
                assert file[field] == b.get(field)
            assert (file["n"], file["r"], file["p"]) == (2**15, 8, 1)
            kek = derive_key(
                b.get("passphrase").encode(),
                b.hex("salt"),
                n=b.int("n"),
                r=b.int("r"),
                p=b.int("p"),
            )
            opened = open_sealed(kek, b.hex("nonce"), b.hex("ciphertext"), club)
            assert opened is not None, "the key file does not open with its passphrase"
            secret = opened
            # The club id is the associated data: any other club id fails to open it.
            assert open_sealed(kek, b.hex("nonce"), b.hex("ciphertext"), bytes(32)) is None
        if version == 2:  # the secret, then the store key
            assert len(secret) == 64
            assert secret[32:] == b.hex("store_key")
            secret = secret[:32]
        assert secret == b.hex("secret")
        assert SigningKey(secret).public == keys[club], "the secret is not the club's key"


def test_log(blocks: list[Block]) -> None:
    clubs = {b.hex("club") for b in of_type(blocks, "genesis")}
    for b in of_type(blocks, "log"):
        descriptor = b.hex("descriptor")
        decoded = canonical.decode_log(descriptor)
        audience = parse_audience(b.get("audience"))
        assert decoded == LogDescriptor(b.hex("club"), b.get("name"), audience)
        assert format_audience(decoded.audience) == b.get("audience")
        assert canonical.encode_log(decoded) == descriptor
        assert b.hex("club") in clubs
        assert all(c in clubs for c in audience.clubs)
        # The layout of protocol.md §3.3, recomputed by hand.
        name = b.get("name").encode()
        assert descriptor == b"".join(
            (
                b"federation/log\x00\x00",
                b"\x01",
                b.hex("club"),
                bytes([len(name)]),
                name,
                bytes([b.int("audience_code")]),
                len(audience.clubs).to_bytes(2, "big"),
                *audience.clubs,
            )
        )
        assert b.hex("log") == hashlib.sha256(descriptor).digest() == canonical.log_id(descriptor)


def test_event(blocks: list[Block]) -> None:
    check = authorised(blocks)
    logs = {b.hex("log"): b.hex("club") for b in of_type(blocks, "log")}
    for b in of_type(blocks, "event"):
        signed = b.hex("signed_header")
        assert signed == b.hex("header") + b.hex("signature")
        payload = b.hex("payload")
        assert payload == b.get("payload_json").encode()
        header = Header(
            club=b.hex("club"),
            log=b.hex("log"),
            seq=b.int("seq"),
            prev=b.hex("prev"),
            time_us=b.int("time_us"),
            kind=b.int("kind"),
            payload_hash=b.hex("payload_hash"),
            payload_size=b.int("payload_size"),
            key=b.hex("key"),
        )
        assert canonical.decode_header(signed) == header
        assert canonical.encode_header(header) == b.hex("header")
        assert Kind(header.kind).name.lower() == b.get("kind_name")
        assert header.payload_hash == hashlib.sha256(payload).digest()
        assert header.payload_size == len(payload)
        assert b.hex("id") == hashlib.sha256(signed).digest() == canonical.event_id(signed)
        assert logs[header.log] == header.club, "the event's club does not own its log (§4.3)"
        # The payload is what its kind expects, read strictly.
        msgspec.json.decode(payload, type=STRICT_PAYLOAD_TYPES[Kind(header.kind)])

        event = verify_event(signed, payload, check)
        assert (event.id, event.header, event.signed, event.payload) == (
            b.hex("id"),
            header,
            signed,
            payload,
        )
        erased = verify_event(signed, None, check)  # §3.5: erased events still verify
        assert erased.erased
        assert erased.id == event.id
        with pytest.raises(InvalidEventError, match="altered payload"):
            verify_event(signed, payload[:-1] + b" ", check)


def _runs(blocks: list[Block]) -> dict[bytes, list[Block]]:
    runs: dict[bytes, list[Block]] = {}
    for b in of_type(blocks, "event"):
        runs.setdefault(b.hex("log"), []).append(b)
    for run in runs.values():
        run.sort(key=lambda b: b.int("seq"))
        assert [b.int("seq") for b in run] == list(range(1, len(run) + 1)), "seq has gaps"
    return runs


def test_runs_verify(blocks: list[Block]) -> None:
    check = authorised(blocks)
    for log, run in _runs(blocks).items():
        assert run[0].hex("prev") == bytes(32)
        for before, after in itertools.pairwise(run):
            assert after.hex("prev") == before.hex("id")
        items = [(b.hex("signed_header"), b.hex("payload")) for b in run]
        for every in (False, True):
            out, error = verify_run(log, None, items, check, every_signature=every)
            assert error is None
            assert list(out.ids) == [b.hex("id") for b in run]
        # Erasing the first payload changes no id and breaks no link (§3.5).
        erased = [(items[0][0], None), *items[1:]]
        out, error = verify_run(log, None, erased, check)
        assert error is None
        assert list(out.ids) == [b.hex("id") for b in run]
        # A run may follow a trusted head (§4.2).
        first = Head(1, run[0].hex("id"))
        out, error = verify_run(log, first, items[1:], check)
        assert error is None
        assert len(out) == len(run) - 1


def _flip(signed: bytes, index: int) -> bytes:
    return signed[:index] + bytes([signed[index] ^ 1]) + signed[index + 1 :]


def test_run_shortcut_keeps_the_valid_prefix(blocks: list[Block]) -> None:
    check = authorised(blocks)
    for log, run in _runs(blocks).items():
        if len(run) < 2:
            continue
        items = [(b.hex("signed_header"), b.hex("payload")) for b in run]
        # A bad last signature: the fallback checks one by one and keeps the rest (§4.4).
        last = len(items) - 1
        bad_last = [*items[:last], (_flip(items[last][0], 230), items[last][1])]
        out, error = verify_run(log, None, bad_last, check)
        assert list(out.ids) == [b.hex("id") for b in run[:last]]
        assert error is not None
        assert "bad signature" in error.reason
        # A bad earlier signature changes that event's id: the next link breaks (§4.4, 2).
        bad_first = [(_flip(items[0][0], 230), items[0][1]), *items[1:]]
        out, error = verify_run(log, None, bad_first, check)
        assert len(out) == 0
        assert error is not None


def test_fork(blocks: list[Block]) -> None:
    check = authorised(blocks)
    held = {b.hex("id"): b for b in of_type(blocks, "event")}
    for b in of_type(blocks, "fork"):
        ours, theirs = b.hex("ours"), b.hex("theirs")
        assert ours != theirs
        assert b.hex("ours_id") == hashlib.sha256(ours).digest()
        assert b.hex("theirs_id") == hashlib.sha256(theirs).digest()
        assert held[b.hex("ours_id")].hex("signed_header") == ours
        # Evidence stands alone: each header verifies on its own, payload or not (§3.6).
        mine = verify_event(ours, None, check)
        other = verify_event(theirs, b.hex("theirs_payload"), check)
        for header in (mine.header, other.header):
            assert (header.club, header.log, header.seq) == (
                b.hex("club"),
                b.hex("log"),
                b.int("seq"),
            )
        fork = fork_between(mine, other)
        assert isinstance(fork, ForkError)
        assert (fork.ours, fork.theirs) == (ours, theirs)
        assert fork_between(mine, mine) is None


def test_genesis_layout_table(blocks: list[Block]) -> None:
    for b in of_type(blocks, "genesis"):
        check_layout("genesis", b.hex("genesis"), canonical.CLUB_TAG, b, canonical.GENESIS_BYTES)


def test_event_header_layout_table(blocks: list[Block]) -> None:
    for b in of_type(blocks, "event"):
        check_layout(
            "event-header", b.hex("header"), canonical.EVENT_TAG, b, canonical.HEADER_BYTES
        )


def test_kinds_table_is_complete() -> None:
    # A node rejects kinds it does not know (§4.1): a second implementation needs them all.
    table = {int(code): name for code, name, _ in doc_table("kinds")}
    assert table == {int(k): k.name.lower() for k in Kind}


def test_payload_tables_match_the_payload_types() -> None:
    for kind, struct_type in PAYLOAD_TYPES.items():
        rows = doc_table(f"payload {kind.name.lower()}")
        documented = [(row[0].strip("`"), row[-1] == "required") for row in rows]
        actual = [(f.name, f.required) for f in msgspec.structs.fields(struct_type)]
        assert documented == actual, f"§3.2 table for {kind.name.lower()} is out of date"


def test_key_files_open_with_the_reference_reader(blocks: list[Block]) -> None:
    for b in of_type(blocks, "keyfile"):
        passphrase = b.get("passphrase").encode() if b.has("passphrase") else None
        envelope = open_envelope(b.get("json").encode(), b.hex("club"), passphrase, "protocol.md")
        assert envelope.key.secret_bytes() == b.hex("secret")
        assert envelope.store_key == (b.hex("store_key") if b.has("store_key") else None)


@pytest.mark.parametrize("passphrase", [b"correct horse battery staple", None])
def test_reference_key_files_have_the_documented_fields(passphrase: bytes | None) -> None:
    written = json.loads(seal_key(SigningKey(bytes(32)), bytes(32), passphrase))
    used = {k for k, v in written.items() if v not in ("", 0)}
    if passphrase is None:
        assert used == {"version", "club", "kdf", "secret"}
    else:
        assert used == {"version", "club", "kdf", "n", "r", "p", "salt", "nonce", "ciphertext"}
    envelope = json.loads(seal_envelope(SigningKey(bytes(32)), bytes(32), bytes(32), passphrase))
    assert envelope["version"] == 2
    used = {k for k, v in envelope.items() if v not in ("", 0)}
    if passphrase is None:
        assert used == {"version", "club", "kdf", "secret", "store_key"}
    else:
        assert used == {"version", "club", "kdf", "n", "r", "p", "salt", "nonce", "ciphertext"}


_STRUCT_CODES = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64", "q": "i64"}


@pytest.mark.parametrize(
    ("name", "layout_struct"),
    [
        ("genesis", canonical._GENESIS),
        ("event-header", canonical._HEADER),
        ("request", canonical._REQUEST),
    ],
)
def test_layout_types_match_the_struct(name: str, layout_struct: struct.Struct) -> None:
    # Small vector values cannot tell u64 from i64: compare with the encoder's format.
    codes = re.findall(r"(\d*)([a-zA-Z])", layout_struct.format.lstrip(">"))
    expected = [f"bytes[{n}]" if c == "s" else _STRUCT_CODES[c] for n, c in codes]
    assert [kind for _, _, _, kind in layout(name)] == expected


# --- erasure (§3.5) --------------------------------------------------------------------


def test_erasure_event_names_the_erased_event(blocks: list[Block]) -> None:
    check = authorised(blocks)
    events = {(b.hex("log"), b.int("seq")): b for b in of_type(blocks, "event")}
    erasures = [b for b in of_type(blocks, "event") if b.get("kind_name") == "erasure"]
    assert erasures, "protocol.md shows no erasure event"
    for b in erasures:
        assert b.int("kind") == Kind.ERASURE.value == 6
        payload = b.hex("payload")
        verify_event(b.hex("signed_header"), payload, check)
        # By hand: exactly {"seq", "event"}, an earlier seq of the same log and its id.
        fields = json.loads(payload)
        assert set(fields) == {"seq", "event"}
        assert 1 <= fields["seq"] < b.int("seq")
        erased = events[(b.hex("log"), fields["seq"])]
        assert fields["event"] == erased.get("id")
        assert erased.get("kind_name") not in ("roster", "erasure")
        # By the reference: the payload decodes strictly and erases exactly that event.
        assert msgspec.json.decode(payload, type=Erasure) == Erasure(fields["seq"], fields["event"])
        named = erasure_target(b.int("seq"), payload)
        assert named == (erased.int("seq"), erased.hex("id"))
        assert erases(erased.int("seq"), erased.hex("id"), erased.int("kind"), named)
        assert not erases(erased.int("seq"), bytes(32), erased.int("kind"), named)
        assert not erases(erased.int("seq"), erased.hex("id"), Kind.ROSTER, named)
        assert erasure_target(fields["seq"], payload) is None, "it must name an earlier seq"
        # The erased event without its payload: same id, the run still verifies (§3.5).
        assert verify_event(erased.hex("signed_header"), None, check).id == erased.hex("id")
        run = sorted(
            (e for (log, _), e in events.items() if log == b.hex("log")),
            key=lambda e: e.int("seq"),
        )
        items = [(e.hex("signed_header"), None if e is erased else e.hex("payload")) for e in run]
        out, error = verify_run(b.hex("log"), None, items, check, every_signature=True)
        assert error is None
        assert list(out.ids) == [e.hex("id") for e in run]


# --- the agreement record (§3.8) --------------------------------------------------------


def _agreement(blocks: list[Block]) -> tuple[Block, bytes]:
    """The one agreement vector and its record's bytes (checked against its length and hash)."""
    (b,) = of_type(blocks, "agreement")
    data = b.get("record").encode()
    assert len(data) == b.int("record_bytes")
    assert hashlib.sha256(data).digest() == b.hex("record_sha256")
    return b, data


def _numbered(b: Block, key: str) -> list[str]:
    found = [b.get(f"{key}_{i}") for i in range(1, 10) if b.has(f"{key}_{i}")]
    assert len(found) == sum(k.startswith(f"{key}_") for k, _ in b.fields), f"{key}_N has gaps"
    return found


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _genesis_keys(geneses: list[bytes]) -> KeyCheck:
    """Version 1 (§2.2): each club's genesis key, and only it, signs for the club."""
    keys = {hashlib.sha256(g).digest(): canonical.decode_genesis(g).key for g in geneses}

    def check(club: bytes, key: bytes) -> bool:
        return keys.get(club) == key

    return check


def test_agreement_record_by_hand(blocks: list[Block]) -> None:
    b, data = _agreement(blocks)
    record = json.loads(data)
    assert list(record) == ["format", "proposal", "version", "rule", "clubs", "logs", "events"]
    assert record["format"] == "federation-agreement/1"
    assert (record["proposal"], record["version"], record["rule"]) == (
        b.get("proposal"),
        b.get("version"),
        b.get("rule"),
    )
    geneses = [_b64(g) for g in record["clubs"]]
    clubs = {b.hex("proposer"), *(bytes.fromhex(c) for c in b.get("invited").split(" "))}
    assert {hashlib.sha256(g).digest() for g in geneses} == clubs
    logs = {}
    for d in map(_b64, record["logs"]):
        descriptor = canonical.decode_log(d)
        assert descriptor.club in clubs
        assert descriptor.audience == canonical.Audience("clubs", tuple(sorted(clubs)))
        logs[hashlib.sha256(d).digest()] = descriptor
    check = _genesis_keys(geneses)
    held = {}
    for item in record["events"]:
        assert list(item) == ["signed", "payload"]
        signed, payload = _b64(item["signed"]), _b64(item["payload"])
        event = verify_event(signed, payload, check)
        assert event.header.kind == Kind.PROPOSAL
        assert logs[event.header.log].club == event.header.club
        held[event.id.hex()] = payload
    steps = dict(line.split(" ", 1) for line in _numbered(b, "step"))
    assert held == {i: p.encode() for i, p in steps.items()}
    assert next(iter(steps)) == b.get("proposal"), "step_1 is the first version"
    assert json.loads(steps[b.get("version")])["amends"] == b.get("proposal")


def test_agreement_record_verifies_offline(
    blocks: list[Block], monkeypatch: pytest.MonkeyPatch
) -> None:
    b, data = _agreement(blocks)
    checked: list[bytes] = []

    def one_by_one(signed: bytes, payload: bytes | None, may_sign: KeyCheck) -> VerifiedEvent:
        checked.append(signed)
        return verify_event(signed, payload, may_sign)

    monkeypatch.setattr("federation.views.agreement.verify_event", one_by_one)
    o = agreement.check_record(data)
    monkeypatch.undo()
    record = json.loads(data)
    events = [(_b64(e["signed"]), _b64(e["payload"])) for e in record["events"]]
    assert checked == [signed for signed, _ in events], "every signature, one by one"
    assert (o.state, o.proposal, o.version.id, o.rule, o.proposer) == (
        b.get("state"),
        b.get("proposal"),
        b.get("version"),
        b.get("rule"),
        b.get("proposer"),
    )
    assert o.invited == b.get("invited").split(" ")
    assert o.agreed_us == b.int("agreed_us")
    accepted = {}
    for line in _numbered(b, "accepted"):
        club, version, event, text = line.split(" ", 3)
        accepted[club] = (version, event, text)
    assert {c: (a.version, a.event, a.text) for c, a in o.accepted.items()} == accepted
    assert set(accepted) == {o.proposer, *o.invited}
    assert {version for version, _, _ in accepted.values()} == {b.get("version")}
    # The record is what the exporter writes from these steps, byte for byte.
    geneses = [_b64(g) for g in record["clubs"]]
    descriptors = [_b64(d) for d in record["logs"]]
    check = _genesis_keys(geneses)
    again = agreement.make_record(
        o,
        [verify_event(signed, payload, check) for signed, payload in events],
        {canonical.club_id(g): g for g in geneses},
        {canonical.log_id(d): d for d in descriptors},
    )
    assert again == data


def test_agreement_record_refuses_any_changed_byte(blocks: list[Block]) -> None:
    # Every one-byte change is refused, or changes no byte the record carries: the
    # unused low bits of a base64 string's last character before "=" (RFC 4648 §3.5)
    # are ignored by the reader, so the bytes decoded, signed and hashed are the same.
    _, data = _agreement(blocks)
    decoded = msgspec.json.decode(data, type=agreement.Record)
    unchanged = 0
    for i in range(len(data)):
        bad = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        try:
            agreement.check_record(bad)
        except InvalidEventError:
            continue
        assert msgspec.json.decode(bad, type=agreement.Record) == decoded, f"byte {i}"
        assert data[i + 1 : i + 2] == b"=", f"byte {i} is not a base64 pad-bit character"
        unchanged += 1
    assert unchanged < 20
    with pytest.raises(InvalidEventError, match="truncated or altered"):
        agreement.check_record(data[:-1])


# --- key events (§2.2) -----------------------------------------------------------------


def test_key_events(blocks: list[Block]) -> None:
    """Club A's rotation and revocation verify, follow one another by the key rule,
    and each cut entry opens, by hand and with the reference, only for its log."""
    vectors = of_type(blocks, "keyevent")
    assert [b.get("action") for b in vectors] == ["rotate", "revoke"]
    genesis = canonical.decode_genesis(of_type(blocks, "genesis")[0].hex("genesis"))
    folded = []
    for b in vectors:
        event = verify_event(b.hex("signed_header"), b.hex("payload"), lambda c, k: True)
        assert event.id == b.hex("id")
        assert event.header.key == b.hex("signer")
        assert event.header.log == keys.key_log_id(b.hex("club")) == b.hex("log")
        assert event.header.kind == Kind.KEY
        folded.append((event.header, event.payload, event.id))
        n, log, first = b.int("seq"), b.hex("cut_log"), b.hex("cut_first")
        suffix = b"\x01" + log + first + struct.pack(">Q", n)
        assert canonical.sha256(b"federation/cutid" + suffix) == b.hex("cut_tag")
        assert canonical.sha256(b"federation/cutky" + suffix) == b.hex("cut_key")
        entry = b.hex("cut_entry")
        assert entry[:32] == b.hex("cut_tag")
        opened = crypto.open_sealed(b.hex("cut_key"), bytes(12), entry[32:], b"")
        assert opened == struct.pack(">Q", b.int("cut_seq")) + b.hex("cut_event")
        payload = msgspec.json.decode(b.hex("payload"))
        assert entry.hex() in payload["cut"]
        assert len(payload["cut"]) == 8
        found = [keys.open_cut_entry(bytes.fromhex(e), log, first, n) for e in payload["cut"]]
        assert [f for f in found if f is not None] == [(b.int("cut_seq"), b.hex("cut_event"))]
    history = keys.fold_key_log(genesis, folded)
    assert [e.key.hex() for e in history.epochs[1:]] == [b.get("key") for b in vectors]
    public = vectors[0].hex("cut_log")
    first = vectors[0].hex("cut_first")
    assert history.window(public, first, genesis.key) == (0, 2)
    assert history.window(public, first, vectors[0].hex("key")) == (2, 2)  # never signed
    assert history.window(public, first, vectors[1].hex("key")) == (2, float("inf"))
