"""Fuzz `federation restore` (node/backup.py): every mangled backup is refused in one
line that says what to do, leaving nothing behind, or restores to a node that verifies.

One real backup is made per module (a node with a private and a public log). The
properties feed `restore` mutations of it (bytes cut off, flipped, spliced, inserted,
appended) at three depths: the age file itself; the tar inside, sealed again so that
age opens it and the inner decoder sees the damage; and single files inside the tar
with the manifest's hash made to match, so the damage reaches the key envelope, the
config and the store. Hand-made archives then try what a crafted backup could: links,
paths out of the directory, sparse entries that grow on reading, too many entries, and a
config that points the store or key outside the node directory.

The tar is sealed again to a member's age key (X25519, `backup --to`): opening it costs
under a millisecond. A passphrase costs a second of scrypt to seal and another to open,
so the passphrase path gets a few examples of its own. Examples are derandomized and
bounded (about 270 in all).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import ssl
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.node.backup import MANIFEST
from federation.node.keyfile import PASSPHRASE_ENV
from tests.seized.support import (
    PASSPHRASE,
    Run,
    cli_environment,
    cli_quiet,
    init_quiet,
    member_identity,
    ok,
)

# Each refusal ends by saying what to do: one of these (every message restore can give).
ADVICE = re.compile(
    r"use another (copy|backup)|restore into a new directory|give (its passphrase|--identity"
    r"|the passphrase)|check (you have the right backup|it with)|create it first|choose another"
)


class Source:
    """The module's one real backup, and what opens it. A plain class: Hypothesis
    prints a failing example's arguments, and a dataclass's fields would be megabytes."""

    def __init__(self, root: Path, sealed: bytes, sealed_passphrase: bytes, identity: Path) -> None:
        self.root = root
        self.sealed = sealed  # the backup `backup --to MEMBER` wrote
        self.sealed_passphrase = sealed_passphrase  # the backup sealed with the passphrase
        self.identity = identity  # the member's age identity file
        member = pyrage.x25519.Identity.from_str(identity.read_text().strip())
        self.recipient = member.to_public()
        self.plain = bytes(pyrage.decrypt(sealed, [member]))  # the tar inside

    def __repr__(self) -> str:
        return f"Source({self.root})"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    with cli_environment():
        root = tmp_path_factory.mktemp("fuzz-backup")
        node = root / "club"
        init_quiet(node, "Fuzzed Club")
        ok(cli_quiet(node, "post", "note", "--log", "minutes", "--text", "private words"))
        ok(cli_quiet(node, "post", "note", "--audience", "public", "--text", "public words"))
        member, identity = member_identity(root)
        to_member, with_passphrase = root / "member.backup", root / "passphrase.backup"
        ok(cli_quiet(node, "backup", "-o", str(to_member), "--to", str(member.to_public())))
        ok(cli_quiet(node, "backup", "-o", str(with_passphrase)))
        yield Source(root, to_member.read_bytes(), with_passphrase.read_bytes(), identity)


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A backup sealed to a member's age key opens without the passphrase; the restored
    # key envelope still needs it (it is the node's).
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def attempt(source: Source, data: bytes, *, identity: bool = True) -> Run:
    """`federation restore` of `data`, and the oracle: refused in one line that says
    what to do, with nothing written beside the file; or restored to a node that
    opens and verifies, with nothing else left."""
    with tempfile.TemporaryDirectory(dir=source.root) as tmp:
        work = Path(tmp)
        given_file = work / "given.backup"
        given_file.write_bytes(data)
        target = work / "restored"
        secret = ["--identity", str(source.identity)] if identity else []
        run = cli_quiet(None, "restore", str(given_file), str(target), *secret)
        if run.code == 0:
            assert {p.name for p in work.iterdir()} == {"given.backup", "restored"}
            verified = cli_quiet(target, "verify", "--json")
            assert verified.code == 0, verified.err
            assert verified.json()["ok"] is True
            # ... and `run` could serve: its TLS pair loads as service.py loads it.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                target / "tls.crt", target / "tls.key"
            )
        else:
            assert run.out == ""
            lines = run.err.splitlines()
            assert len(lines) == 1, run.err
            assert lines[0].startswith("federation: error: "), run.err
            assert ADVICE.search(lines[0]), lines[0]
            assert listing(work) == ["given.backup"]  # no target, no staging, no temp file
        return run


# --- mutations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """Damage a disk, a transfer or a hand can do to a file: cut it, flip bits, splice
    a run of it elsewhere, insert, delete or append bytes. Positions are drawn as
    numbers and taken modulo the length of what is mutated, so one strategy serves
    every file (and draws never depend on the fixture's bytes)."""

    how: str
    at: tuple[int, ...]  # positions (flip: one a bit)
    length: int
    bits: tuple[int, ...]
    keep: bool  # splice: insert the run, or write it over what is there
    extra: bytes

    def __call__(self, data: bytes) -> bytes:
        n = len(data)
        first = self.at[0] % n
        if self.how == "truncate":
            return data[:first]
        if self.how == "flip":
            out = bytearray(data)
            for at, bit in zip(self.at, self.bits, strict=False):
                out[at % n] ^= 1 << bit
            return bytes(out)
        if self.how == "splice":
            piece = data[first : first + self.length]
            to = self.at[-1] % (n + 1)
            return data[:to] + piece + data[to if self.keep else to + len(piece) :]
        if self.how == "insert":
            return data[:first] + self.extra + data[first:]
        if self.how == "delete":
            return data[:first] + data[first + self.length :]
        return data + (self.extra if self.keep else data[: self.length])


MUTATIONS = st.builds(
    Mutation,
    how=st.sampled_from(["truncate", "flip", "splice", "insert", "delete", "extend"]),
    at=st.lists(st.integers(0, 2**31), min_size=1, max_size=4).map(tuple),
    length=st.integers(1, 4096),
    bits=st.lists(st.integers(0, 7), min_size=4, max_size=4).map(tuple),
    keep=st.booleans(),
    extra=st.binary(min_size=1, max_size=1024),
)


def members(plain: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        found = []
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None
            found.append((member, extracted.read()))
        return found


def build(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, body in entries:
            if info.isreg():
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            else:
                tar.addfile(info)
    return out.getvalue()


def with_files(plain: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """The backup's tar with its files changed by `change` and the manifest's hashes
    (and file list) made to match: only what is inside the files can tell."""
    old = members(plain)
    files = {info.name: body for info, body in old if info.name != MANIFEST}
    manifest = msgspec.json.decode(next(body for info, body in old if info.name == MANIFEST))
    change(files)
    manifest["files"] = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    entries = [(_info(MANIFEST), msgspec.json.encode(manifest))]
    entries += [(_info(name), body) for name, body in files.items()]
    return build(entries)


def _info(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o600
    return info


def seal(plain: bytes, source: Source) -> bytes:
    return bytes(pyrage.encrypt(plain, [source.recipient]))


def fuzz(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)


# --- properties --------------------------------------------------------------------------


def test_the_unchanged_backup_restores(source: Source) -> None:
    # Positive control: the oracle's success branch, and what the mutations start from.
    assert attempt(source, source.sealed).code == 0
    assert attempt(source, seal(source.plain, source)).code == 0


@fuzz(40)
@given(mutation=MUTATIONS)
def test_a_mangled_age_file_is_refused(source: Source, mutation: Mutation) -> None:
    attempt(source, mutation(source.sealed))


# Most of a file is the store's bytes: random damage rarely lands on the few hundred
# bytes of structure around them, so the structure gets damage of its own.
AGE_HEADER_BYTES = 256  # the age header: version line, recipient stanza, MAC


@fuzz(30)
@given(mutation=MUTATIONS)
def test_a_mangled_age_header_is_refused(source: Source, mutation: Mutation) -> None:
    head = source.sealed[:AGE_HEADER_BYTES]
    attempt(source, mutation(head) + source.sealed[AGE_HEADER_BYTES:])


@fuzz(70)
@given(mutation=MUTATIONS)
def test_a_mangled_archive_inside_a_valid_age_file(source: Source, mutation: Mutation) -> None:
    attempt(source, seal(mutation(source.plain), source))


def header_offsets(plain: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return [member.offset for member in tar.getmembers()]


@fuzz(50)
@given(which=st.integers(0, 5), mutation=MUTATIONS)
def test_a_mangled_entry_header_inside_a_valid_age_file(
    source: Source, which: int, mutation: Mutation
) -> None:
    at = header_offsets(source.plain)[which]
    plain = source.plain
    attempt(source, seal(plain[:at] + mutation(plain[at : at + 512]) + plain[at + 512 :], source))


NAMES = ["config.toml", "club.key", "tls.crt", "tls.key", "store.sqlite"]


@fuzz(60)
@given(name=st.sampled_from(NAMES), mutation=MUTATIONS)
def test_a_mangled_file_whose_hash_matches(source: Source, name: str, mutation: Mutation) -> None:
    body = mutation({i.name: b for i, b in members(source.plain)}[name])

    def change(files: dict[str, bytes]) -> None:
        files[name] = body

    attempt(source, seal(with_files(source.plain, change), source))


@fuzz(4)
@given(mutation=MUTATIONS)
def test_a_mangled_archive_sealed_with_the_passphrase(source: Source, mutation: Mutation) -> None:
    # The same path through the passphrase (scrypt: seconds an example, so few).
    inner = mutation(source.plain)
    attempt(source, bytes(pyrage.passphrase.encrypt(inner, PASSPHRASE)), identity=False)


def test_a_cut_passphrase_backup_is_refused(source: Source) -> None:
    run = attempt(source, source.sealed_passphrase[:-100], identity=False)
    assert "is truncated or was altered" in run.err


# --- crafted archives --------------------------------------------------------------------


def _link(name: str, to: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = _info(name, kind)
    info.linkname = to
    return info, b""


def _sparse(plain: bytes) -> bytes:
    """The backup with its store as a sparse entry (GNU sparse 0.1, in PAX headers)
    claiming a terabyte of holes around 512 bytes: reading it would make a terabyte
    from a few bytes."""
    entries = []
    for info, body in members(plain):
        if info.name == "store.sqlite":
            info.pax_headers = {"GNU.sparse.map": "0,512", "GNU.sparse.size": str(1 << 40)}
            body = body[:512]
        entries.append((info, body))
    return build(entries)


Entry = tuple[tarfile.TarInfo, bytes]


def _first(plain: bytes, entry: Entry) -> list[Entry]:
    """`entry` first, then the backup's own but its last: as many entries as a backup
    has, so the entry itself is what is refused."""
    return [entry, *members(plain)[:-1]]


def _crafted(source: Source, case: str, outside: Path) -> bytes:
    plain = source.plain
    if case == "symlink":
        return build(_first(plain, _link("evil", str(outside), tarfile.SYMTYPE)))
    if case == "hard link":
        return build(_first(plain, _link("evil", "/etc/passwd", tarfile.LNKTYPE)))
    if case == "directory":
        return build(_first(plain, (_info("sub", tarfile.DIRTYPE), b"")))
    if case == "device":
        return build(_first(plain, (_info("dev", tarfile.CHRTYPE), b"")))
    if case == "absolute path":
        return build(_first(plain, (_info(str(outside / "x")), b"x")))
    if case == "dot dot":
        return build(_first(plain, (_info("../x"), b"x")))
    if case == "sparse":
        return _sparse(plain)
    if case == "many entries":
        return build([*members(plain)] + [(_info(f"f{i}"), b"") for i in range(5000)])
    if case == "entry twice":
        return build(_first(plain, members(plain)[1]))
    if case == "store outside":
        return with_files(plain, lambda f: _config(f, "store", str(outside / "store.sqlite")))
    if case == "store up":
        return with_files(plain, lambda f: _config(f, "store", "../store.sqlite"))
    if case == "key outside":
        return with_files(plain, lambda f: _config(f, "file", str(outside / "club.key")))
    if case == "store is the key":
        return with_files(plain, lambda f: _config(f, "store", "club.key"))
    if case == "store renamed outside":
        return with_files(plain, lambda f: _moved(f, "store.sqlite", str(outside / "s")))
    if case == "an extra file":
        return with_files(plain, lambda f: _swap(f, "tls.crt", "store.sqlite-wal"))
    if case == "a name with a nul":
        return with_files(plain, lambda f: _swap(f, "tls.crt", "x\0y"))
    raise AssertionError(case)


def _config(files: dict[str, bytes], field: str, value: str) -> None:
    """The config with node.store or key.file set to `value`; the files stay."""
    text = files["config.toml"].decode()
    line = f"{field} = {msgspec.json.encode(value).decode()}"
    text, n = re.subn(rf'(?m)^{field} = ".*"$', line, text)
    assert n == 1
    files["config.toml"] = text.encode()


def _swap(files: dict[str, bytes], name: str, to: str) -> None:
    files[to] = files.pop(name)


def _moved(files: dict[str, bytes], name: str, to: str) -> None:
    files[to] = files.pop(name)
    _config(files, "store", to)


# What each is refused with (a long name goes into an extended header: refused as that).
PATH = "not a file name|not a plain file"
CRAFTED = {
    "symlink": "is not a plain file",
    "hard link": "is not a plain file",
    "directory": "is not a plain file",
    "device": "is not a plain file",
    "absolute path": PATH,
    "dot dot": "not a file name",
    "sparse": "is not a plain file",
    "many entries": "more than 6 entries",
    "entry twice": "appears twice",
    "store outside": "not a file name in the node directory",
    "store up": "not a file name in the node directory",
    "key outside": "not a file name in the node directory",
    "store is the key": "names one file for two",
    "store renamed outside": PATH,
    "an extra file": "its files are not the ones a node directory holds",
    "a name with a nul": "not a file name",
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_archive_is_refused(source: Source, case: str) -> None:
    outside = source.root / f"outside-{case.replace(' ', '-')}"
    outside.mkdir()
    run = attempt(source, seal(_crafted(source, case, outside), source))
    assert run.code != 0
    assert re.search(CRAFTED[case], run.err), run.err
    assert listing(outside) == []  # nothing written where the archive pointed
    assert os.path.exists(outside)
