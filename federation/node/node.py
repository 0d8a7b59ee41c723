"""The node: one club's directory, store and key, and the operations the CLI offers.

This is the imperative shell around the pure core: it reads files, opens the store,
asks for the passphrase, and calls core functions for every rule. A node directory:

    config.toml     the operator's settings (federation.core.config)
    club.key        the club's signing key, sealed with the passphrase
    recovery.key    the recovery key named in the genesis: move it off this machine
    tls.crt/.key    the self-signed certificate peers pin (protocol.md §5.3)
    store.sqlite    the logs, forks and projections
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from federation.core import canonical, crypto
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.config import CONFIG_FILE, Config, parse_config, render_config
from federation.core.events import VerifiedEvent, sign_event
from federation.core.keys import KeyAuthority, KeyCheck
from federation.core.log import STANDARD_AUDIENCES, default_log_name, descriptor_bytes
from federation.core.payloads import make_payload
from federation.core.selection import roster_log_id
from federation.errors import ConfigError, FederationError, KeyFileError, UsageError
from federation.node.keyfile import (
    MIN_PASSPHRASE_CHARS,
    PASSPHRASE_ENV,
    needs_passphrase,
    open_key,
    read_key_file,
    seal_key,
    write_private,
)
from federation.node.system import Clock, random_bytes, system_clock
from federation.store.base import LogRecord, Store
from federation.store.meta import holding_back
from federation.store.sqlite import SqliteStore

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class NodePaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    def resolve(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    @property
    def recovery_key(self) -> Path:
        return self.root / "recovery.key"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls.key"


def read_passphrase(config: Config, paths: NodePaths, *, confirm: bool = False) -> bytes | None:
    """The passphrase, from FEDERATION_PASSPHRASE, the configured file, or a prompt."""
    if config.key.passphrase == "none":
        return None
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env.encode()
    if config.key.passphrase == "file":
        file = paths.resolve(config.key.passphrase_file)
        try:
            return file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise KeyFileError(
                f"cannot read passphrase file {file}: {exc.strerror}; check key.passphrase_file",
                path=str(file),
            ) from None
    return prompt_passphrase(confirm=confirm)


def prompt_passphrase(*, confirm: bool) -> bytes:
    if not sys.stdin.isatty():
        raise KeyFileError(
            f"the key is encrypted and there is no terminal to ask for its passphrase; "
            f"set {PASSPHRASE_ENV} or key.passphrase_file"
        )
    first = getpass.getpass("Club key passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise UsageError("the passphrases did not match; run the command again")
    return first.encode()


def load_config(paths: NodePaths) -> Config:
    try:
        text = paths.config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no node at {paths.root} ({paths.config} is missing); create one with "
            "`federation init` or pass --node DIR",
            path=str(paths.config),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {paths.config}: {exc}", path=str(paths.config)) from None
    return parse_config(text, str(paths.config))


async def init_node(
    root: Path,
    *,
    name: str,
    listen: str,
    passphrase: bytes | None,
    plain_http: bool = False,
    passphrase_file: str = "",
    clock: Clock = system_clock,
    feed_listen: str = "",
) -> bytes:
    """Create a node directory for a new club; returns the club id. Never overwrites.
    `passphrase_file`: where the running node will read the passphrase (unattended)."""
    paths = NodePaths(root)
    # Every file init writes: finding any (even from an unfinished init) means stop, since
    # the key files are created exclusively and must never be overwritten.
    writes = (paths.config, root / "store.sqlite", root / "club.key", paths.recovery_key)
    found = [p for p in (*writes, paths.tls_key, paths.tls_cert) if p.exists()]
    if found:
        raise UsageError(
            f"{root} already holds a node ({found[0].name} exists); choose another directory"
        )
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise UsageError(f"the passphrase must be at least {MIN_PASSPHRASE_CHARS} characters")
    now = clock()
    key = crypto.SigningKey(random_bytes(crypto.SECRET_KEY_BYTES))
    recovery = crypto.SigningKey(random_bytes(crypto.SECRET_KEY_BYTES))
    genesis = canonical.encode_genesis(Genesis(key.public, canonical.sha256(recovery.public), now))
    club = canonical.club_id(genesis)
    text = render_config(
        name,
        club.hex(),
        listen,
        passphrase="none" if passphrase is None else "file" if passphrase_file else "prompt",
        plain_http=plain_http,
        passphrase_file=passphrase_file,
        feed_listen=feed_listen,
    )
    parse_config(text)  # what we write must be what we read
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    write_private(paths.root / "club.key", seal_key(key, club, passphrase))
    write_private(paths.recovery_key, seal_key(recovery, club, passphrase))
    cert, tls_key = crypto.make_tls_certificate(
        # The same name for every club: a scanner must not learn which club runs here.
        "federation-node",
        dt.datetime.fromtimestamp(now / 1e6, dt.UTC),
        random_bytes(crypto.SECRET_KEY_BYTES),
    )
    write_private(paths.tls_key, tls_key)
    paths.tls_cert.write_bytes(cert)
    async with await SqliteStore.open(root / "store.sqlite", create=True) as store:
        await store.put_club(club, genesis)
        for audience in STANDARD_AUDIENCES:
            a = Audience(audience)  # type: ignore[arg-type]
            d = descriptor_bytes(club, default_log_name(a), a)
            await store.put_log(canonical.log_id(d), d)
    # Written last: a directory without config.toml is an init that did not finish.
    write_private(paths.config, text.encode())
    return club


class Node:
    """An open node directory. Use `async with await Node.open(root) as node`."""

    def __init__(self, paths: NodePaths, config: Config, store: Store, clock: Clock) -> None:
        self.paths = paths
        self.config = config
        self.store = store
        self.clock = clock
        self.club = bytes.fromhex(config.club.id)
        self._key: crypto.SigningKey | None = None
        self.genesis: dict[bytes, Genesis] = {}

    @classmethod
    async def open(cls, root: Path, *, clock: Clock = system_clock) -> Node:
        paths = NodePaths(root)
        config = load_config(paths)
        store = await SqliteStore.open(paths.resolve(config.node.store))
        node = cls(paths, config, store, clock)
        try:
            await node.load_clubs()
            if node.club not in node.genesis:
                raise ConfigError(
                    f"{paths.config}: club.id {config.club.id[:12]}… is not the club of this "
                    "store; restore the original config.toml",
                    field="club.id",
                )
        except BaseException:
            await store.aclose()
            raise
        return node

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.store.aclose()

    async def load_clubs(self) -> None:
        self.genesis = {
            club: canonical.decode_genesis(g) for club, g in (await self.store.clubs()).items()
        }

    @property
    def keys(self) -> KeyAuthority:
        """Who may sign for the clubs this node holds (protocol.md §2.2, `core.keys`)."""
        return KeyAuthority(self.genesis)

    @property
    def authorized(self) -> KeyCheck:
        """The §2.2 predicate, for verifying what this node holds."""
        return self.keys.may_sign

    @property
    def key_encrypted(self) -> bool:
        path = self.paths.resolve(self.config.key.file)
        return needs_passphrase(read_key_file(path), str(path))

    def unlock(self, passphrase: bytes | None = None) -> crypto.SigningKey:
        """The club's signing key, asking for the passphrase once per process."""
        if self._key is None:
            path = self.paths.resolve(self.config.key.file)
            data = read_key_file(path)
            if passphrase is None and needs_passphrase(data, str(path)):
                passphrase = read_passphrase(self.config, self.paths)
            key = open_key(data, self.club, passphrase, str(path))
            if not self.keys.is_signing_key(self.club, key.public):
                raise KeyFileError(
                    f"key file {path} does not hold this club's signing key; restore the "
                    "right club.key from your backup",
                    path=str(path),
                )
            self._key = key
        return self._key

    # --- logs and posting -----------------------------------------------------------

    async def own_log(self, audience: Audience, name: str | None = None) -> LogRecord:
        """The club's log for `audience` (named `name`), opened on first use."""
        name = name or default_log_name(audience)
        for record in await self.store.logs():
            if record.club == self.club and record.name == name:
                if record.audience != audience:
                    raise UsageError(
                        f"log {name!r} has audience {record.audience.kind}, not "
                        f"{audience.kind}; a log's audience never changes: choose another --log"
                    )
                return record
        try:
            d = descriptor_bytes(self.club, name, audience)
        except FederationError as exc:
            raise UsageError(f"cannot open log {name!r}: {exc}") from None
        log = canonical.log_id(d)
        await self.store.put_log(log, d)
        opened = await self.store.log(log)
        assert opened is not None
        return opened

    async def post(
        self, kind: Kind, fields: dict[str, object], audience: Audience, log_name: str | None = None
    ) -> tuple[LogRecord, VerifiedEvent]:
        payload = make_payload(kind, fields)
        if len(payload) > canonical.MAX_PAYLOAD_BYTES:
            raise UsageError(
                f"payload is {len(payload)} bytes, over the limit of "
                f"{canonical.MAX_PAYLOAD_BYTES}; shorten the text"
            )
        key = self.unlock()
        record = await self.own_log(audience, log_name)
        if record.frozen:
            raise UsageError(
                f"log {record.name!r} is frozen after a fork: two different events signed "
                "with this club's key hold one seq of it (this node was restored from an "
                "old backup and wrote again, or the key is used elsewhere); nothing more "
                "can be added to it. The proof is in `federation status`; post into "
                "another log (`--log NAME`), and if the key may be stolen, rotate it"
            )
        held = record.head.seq if record.head else 0
        # protocol.md §3.6: a peer sent a validly signed event of ours beyond our head,
        # so this node lost writes (restored from an old backup); writing now would
        # fork the club's own log. A bare claim never gets here (DESIGN principle 15),
        # and the roster log is never held back: `peers remove` must always work.
        if record.id != roster_log_id(self.club):
            guard = await holding_back(self.store, record.id, held)
            if guard is not None:
                raise UsageError(
                    f"log {record.name!r} is behind what peer {guard.peer or '?'} holds "
                    f"(a signed event of ours at seq {guard.seq}, here {held}): this node "
                    "looks restored from an old backup; run `federation sync` to catch up "
                    "before posting (pausing or removing that peer lifts this)"
                )
        event = sign_event(
            key,
            club=self.club,
            log=record.id,
            head=record.head,
            time_us=self.clock(),
            kind=kind,
            payload=payload,
        )
        await self.store.append([event])
        return record, event

    async def find_event(self, ref: str) -> VerifiedEvent:
        """An event by its id or an unambiguous prefix of at least 8 hex digits."""
        text = ref.strip().lower()
        if len(text) < 8 or len(text) > 64 or any(c not in "0123456789abcdef" for c in text):
            raise UsageError(
                f"EVENT must be an event id (at least 8 hex digits, from `federation log`); "
                f"got {ref!r}"
            )
        prefix = bytes.fromhex(text[: len(text) // 2 * 2])
        found = [
            e
            for e in await self.store.events_by_id_prefix(prefix, limit=50)
            if e.id.hex().startswith(text)
        ]
        if not found:
            raise UsageError(f"no event {ref!r} in this node; list events with `federation log`")
        if len(found) > 1:
            raise UsageError(f"event id {ref!r} is ambiguous; give more digits")
        return found[0]
