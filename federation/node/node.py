"""The node: one club's directory, store and key, and the operations the CLI offers.

This is the imperative shell around the pure core: it reads files, opens the store,
asks for the passphrase, and calls core functions for every rule. A node directory:

    config.toml     the operator's settings (federation.core.config)
    club.key        the club's signing key, sealed with the passphrase
    recovery.key    only on nodes made before recovery words: `federation recovery
                    move-off` shows it as words and deletes it (node/recovery.py)
    tls.crt/.key    the self-signed certificate peers pin (protocol.md §5.3)
    store.sqlite    the logs, forks and projections
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import getpass
import glob
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
from federation.core.keys import KeyAuthority, KeyCheck, KeyHistory, key_log_id
from federation.core.log import STANDARD_AUDIENCES, default_log_name, descriptor_bytes
from federation.core.naming import MIN_PREFIX_HEX, hex_prefix, resolve_id
from federation.core.payloads import POSTABLE_KINDS, make_payload
from federation.core.selection import roster_log_id
from federation.errors import ConfigError, FederationError, KeyFileError, UsageError
from federation.node import at_rest, keylog, rails
from federation.node.keyfile import (
    MIN_PASSPHRASE_CHARS,
    PASSPHRASE_ENV,
    Envelope,
    needs_passphrase,
    new_store_key,
    open_envelope,
    open_key,
    read_key_file,
    read_passphrase_file,
    replace_private,
    seal_envelope,
    seal_key,
    write_private,
)
from federation.node.system import Clock, random_bytes, system_clock
from federation.store.base import LogRecord, Store
from federation.store.meta import holding_back, waits_after_restore
from federation.store.sqlite import SqliteStore

Progress = Callable[[int, int], None]  # (done, total)
# Why the seizer's key events a revocation replaces are held apart (node/keys.py).
REPLACED_BY_REVOCATION = "replaced by the club's revocation"


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

    @property
    def restore_staging(self) -> str:
        """How a restore into this directory names its staging directory beside it,
        before a random suffix (node/backup.py: renamed into place at the end)."""
        return f".{self.absolute.name}.restoring-"

    @property
    def absolute(self) -> Path:
        """The directory as an absolute path, `.` and `..` resolved (not links)."""
        return Path(os.path.abspath(self.root))


def read_passphrase(config: Config, paths: NodePaths, *, confirm: bool = False) -> bytes | None:
    """The passphrase, from FEDERATION_PASSPHRASE, the configured file, or a prompt."""
    if config.key.passphrase == "none":
        return None
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env.encode()
    if config.key.passphrase == "file":
        return read_passphrase_file(paths.resolve(config.key.passphrase_file))
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
        prefix = glob.escape(paths.restore_staging)
        left = sorted(paths.absolute.parent.glob(f"{prefix}*"))
        if left:  # a restore killed midway: its files are there, the node is not
            raise ConfigError(
                f"no node at {paths.root}: a restore into it was cut off and left {left[0]}; "
                "run `federation restore` again (it removes what was left)",
                path=str(paths.config),
            ) from None
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
    recovery_seed: bytes | None = None,
) -> bytes:
    """Create a node directory for a new club; returns the club id. Never overwrites.
    `passphrase_file`: where the running node will read the passphrase (unattended).
    `recovery_seed`: the recovery key's 32-byte seed, which the caller shows the operator
    as words (node/recovery.py); it is never written here (protocol.md §2.1, DESIGN
    principle 21). Without it a seed is drawn and forgotten: a club nobody can recover."""
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
    recovery = crypto.SigningKey(recovery_seed or random_bytes(crypto.SECRET_KEY_BYTES))
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
    # The key envelope (protocol.md §2.3): the signing key and the store key, sealed
    # together, so reading the store needs the passphrase too.
    store_key = new_store_key()
    write_private(paths.root / "club.key", seal_envelope(key, store_key, club, passphrase))
    cert, tls_key = crypto.make_tls_certificate(
        # The same name for every club: a scanner must not learn which club runs here.
        "federation-node",
        dt.datetime.fromtimestamp(now / 1e6, dt.UTC),
        random_bytes(crypto.SECRET_KEY_BYTES),
    )
    write_private(paths.tls_key, tls_key)
    write_private(paths.tls_cert, cert)
    async with await SqliteStore.open(root / "store.sqlite", create=True, key=store_key) as store:
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
        self._passphrase: bytes | None = None
        self._envelope: Envelope | None = None  # the key file as Node.open found it
        self.genesis: dict[bytes, Genesis] = {}
        self.histories: dict[bytes, KeyHistory] = {}
        # The key change a crash cut off after its key event, finished by Node.open.
        self.finished_key_change: KeyHistory | None = None
        self._revoke_cut_off = False  # and one cut off before it (`unlock` refuses)

    @classmethod
    async def open(
        cls, root: Path, *, clock: Clock = system_clock, passphrase: bytes | None = None
    ) -> Node:
        paths = NodePaths(root)
        config = load_config(paths)
        # Reading anything needs the passphrase (DESIGN 21): the key envelope holds the
        # store key (protocol.md §2.3). Asked for once; a node made before encryption
        # at rest is upgraded here, crash-safely (node/at_rest.py).
        key_path = paths.resolve(config.key.file)
        data = read_key_file(key_path)
        source = None
        if passphrase is None and needs_passphrase(data, str(key_path)):
            passphrase = read_passphrase(config, paths)
            if config.key.passphrase == "file" and PASSPHRASE_ENV not in os.environ:
                source = str(paths.resolve(config.key.passphrase_file))
        club = bytes.fromhex(config.club.id)
        envelope = open_envelope(data, club, passphrase, str(key_path), source=source)
        store_path = paths.resolve(config.node.store)
        if store_path.exists():  # a missing store is SqliteStore.open's clear error
            envelope = await asyncio.to_thread(
                at_rest.upgrade, key_path, store_path, envelope, club, passphrase
            )
        store = await SqliteStore.open(store_path, key=envelope.store_key)
        node = cls(paths, config, store, clock)
        node._envelope, node._passphrase = envelope, passphrase
        try:
            await node.load_clubs()
            if node.club not in node.genesis:
                raise ConfigError(
                    f"{paths.config}: club.id {config.club.id[:12]}… is not the club of this "
                    "store; restore the original config.toml",
                    field="club.id",
                )
            await node._finish_key_change_at_open()
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
        # Each club's key epochs, from its key log (protocol.md §2.2, node.keylog).
        self.histories = await keylog.load_histories(self.store, self.genesis)

    @property
    def keys(self) -> KeyAuthority:
        """Who may sign for the clubs this node holds (protocol.md §2.2, `core.keys`)."""
        return KeyAuthority(self.genesis, self.histories)

    @property
    def authorized(self) -> KeyCheck:
        """The §2.2 predicate, for verifying what this node holds."""
        return self.keys.may_sign

    @property
    def passphrase(self) -> bytes | None:
        """The passphrase Node.open unlocked the key envelope with (None: unencrypted):
        what else needs it in this process (an export's age seal) asks no second time."""
        return self._passphrase

    @property
    def key_encrypted(self) -> bool:
        path = self.paths.resolve(self.config.key.file)
        return needs_passphrase(read_key_file(path), str(path))

    def unlock(self, passphrase: bytes | None = None) -> crypto.SigningKey:
        """The club's signing key, asking for the passphrase once per process."""
        if self._revoke_cut_off:
            raise KeyFileError(
                "a `federation key revoke` was cut off before its key event was written: "
                "run it again to finish it (this node signs nothing until then)"
            )
        if self._key is None:
            path = self.paths.resolve(self.config.key.file)
            if self._envelope is not None and passphrase is None:
                # Opened by Node.open, with the passphrase asked for once per process.
                key, passphrase = self._envelope.key, self._passphrase
            else:
                data = read_key_file(path)
                if passphrase is None and needs_passphrase(data, str(path)):
                    passphrase = read_passphrase(self.config, self.paths)
                key = open_key(data, self.club, passphrase, str(path))
            self._passphrase = passphrase
            key = self._finish_key_change(path, key, passphrase)
            if not self.keys.is_signing_key(self.club, key.public):
                revoked = key.public in self.keys.history(self.club).keys  # type: ignore[union-attr]
                raise KeyFileError(
                    f"key file {path} holds a key the club has rotated or revoked (see its "
                    "keys log): this node may no longer sign for the club"
                    if revoked
                    else f"key file {path} does not hold this club's signing key; restore "
                    "the right club.key from your backup",
                    path=str(path),
                )
            self._key = key
        return self._key

    # --- key changes (protocol.md §2.2; the flows are node.keys) ---------------------

    def _next_key_path(self) -> Path:
        path = self.paths.resolve(self.config.key.file)
        return path.with_name(path.name + ".next")

    def _finish_key_change(
        self, path: Path, key: crypto.SigningKey, passphrase: bytes | None
    ) -> crypto.SigningKey:
        """A key change interrupted by a crash: `club.key.next` holds the new key. If
        the keys log holds the key event, finish (the next key becomes club.key);
        otherwise roll back (drop it). Either way the node signs with the key in force."""
        staged = self._next_key_path()
        if not staged.exists():
            return key
        data = staged.read_bytes()
        new = open_key(data, self.club, passphrase, str(staged))
        if self.keys.is_signing_key(self.club, new.public):
            replace_private(path, data)
            staged.unlink()
            return new
        if self.keys.is_signing_key(self.club, key.public):
            staged.unlink()
        return key

    async def _finish_key_change_at_open(self) -> None:
        """A key change (node/keys.py `key_change_steps`) cut off after its key event was
        appended: apply the new key's windows to our logs, then make the staged key the
        key file, as the change would have. Before the event it is `unlock`'s to undo."""
        staged = self._next_key_path()
        if not staged.exists():
            return
        self._revoke_cut_off = await self._revocation_cut_off()
        history = self.keys.history(self.club)
        try:
            new = open_key(staged.read_bytes(), self.club, self._passphrase, str(staged))
        except KeyFileError:
            # Torn by a crash as it was written (before it was written whole): its key
            # event cannot have followed while the key file's key is still in force.
            assert self._envelope is not None
            if history is None or history.current.key == self._envelope.key.public:
                staged.unlink()
                return
            raise
        if history is None or history.current.key != new.public:
            return
        await keylog.apply_windows(self.store, history, self.club, self.clock())
        self.replace_signing_key(new)
        self.finished_key_change = history

    async def _revocation_cut_off(self) -> bool:
        """A revocation cut off between holding apart the seizer's key events and
        appending its own: the seized key is in force here again, and `unlock` must not
        sign with it (it says to run `key revoke` again, which finishes the job)."""
        keys_log = key_log_id(self.club)
        record = await self.store.log(keys_log)
        head = 0 if record is None or record.head is None else record.head.seq
        return any(
            h.log == keys_log and h.seq == head + 1 and h.reason.startswith(REPLACED_BY_REVOCATION)
            for h in await self.store.held_apart()
        )

    def _sealed_like_key_file(self, key: crypto.SigningKey) -> bytes:
        """`key` sealed as the key file is (its passphrase and its store key kept)."""
        path = self.paths.resolve(self.config.key.file)
        envelope = open_envelope(read_key_file(path), self.club, self._passphrase, str(path))
        if envelope.store_key is None:
            return seal_key(key, self.club, self._passphrase)
        return seal_envelope(key, envelope.store_key, self.club, self._passphrase)

    def key_in_file(self) -> crypto.SigningKey:
        """The key the key file holds, in force or not: what `federation key revoke`
        revokes, even once a seizer's own key event has replaced it (§2.2)."""
        if self._envelope is not None:
            return self._envelope.key
        path = self.paths.resolve(self.config.key.file)
        return open_key(read_key_file(path), self.club, self._passphrase, str(path))

    def stage_signing_key(self, key: crypto.SigningKey) -> None:
        """Write the next signing key beside the key file, before its key event is
        appended: a crash then leaves both keys, and unlocking picks the one in force."""
        staged = self._next_key_path()
        staged.unlink(missing_ok=True)
        # Whole or absent, never torn: a crash while it is written must not leave a
        # club.key.next that no start can open (tests/seized/test_interrupted.py).
        replace_private(staged, self._sealed_like_key_file(key))

    def replace_signing_key(self, key: crypto.SigningKey) -> None:
        """The key event is appended: the staged key becomes the key file, and the
        node signs with it from now on. The envelope keeps its passphrase and store key."""
        path = self.paths.resolve(self.config.key.file)
        staged = self._next_key_path()
        data = staged.read_bytes() if staged.exists() else self._sealed_like_key_file(key)
        replace_private(path, data)
        staged.unlink(missing_ok=True)
        self._key = key
        if self._envelope is not None:
            self._envelope = dataclasses.replace(self._envelope, key=key)

    def reload_key(self) -> crypto.SigningKey:
        """Read the key file again, with the passphrase given before (another process
        changed the key: `federation key rotate`)."""
        self._key, self._envelope = None, None
        return self.unlock(self._passphrase)

    # --- logs and posting -----------------------------------------------------------

    async def own_log(self, audience: Audience, name: str | None = None) -> LogRecord:
        """The club's log for `audience` (named `name`), opened on first use."""
        found, log, descriptor = await self._own_log(audience, name)
        return found if found is not None else await self._open_log(log, descriptor)

    async def _open_log(self, log: bytes, descriptor: bytes) -> LogRecord:
        await self.store.put_log(log, descriptor)
        opened = await self.store.log(log)
        assert opened is not None
        return opened

    async def _own_log(
        self, audience: Audience, name: str | None
    ) -> tuple[LogRecord | None, bytes, bytes]:
        """The club's log for `audience` named `name` if it is open (else None), with
        its id and descriptor: what may be written is decided before a log is made."""
        name = name or default_log_name(audience)
        for record in await self.store.logs():
            if record.club == self.club and record.name == name:
                if record.audience != audience:
                    raise UsageError(
                        f"log {name!r} has audience {record.audience.kind}, not "
                        f"{audience.kind}; a log's audience never changes: choose another --log"
                    )
                return record, record.id, record.descriptor
        try:
            d = descriptor_bytes(self.club, name, audience)
        except FederationError as exc:
            raise UsageError(f"cannot open log {name!r}: {exc}") from None
        return None, canonical.log_id(d), d

    async def post(
        self,
        kind: Kind,
        fields: dict[str, object],
        audience: Audience,
        log_name: str | None = None,
        *,
        confirmed: bool = False,
        checked: bool = True,
    ) -> tuple[LogRecord, VerifiedEvent]:
        """Sign and append one event. A kind a person posts passes the posting rails
        first (node/rails.py: refusals, and `confirmed` for a public report), on every
        path that posts; `checked=False` is for steps the node makes itself."""
        payload = make_payload(kind, fields)
        if len(payload) > canonical.MAX_PAYLOAD_BYTES:
            raise UsageError(
                f"payload is {len(payload)} bytes, over the limit of "
                f"{canonical.MAX_PAYLOAD_BYTES}; shorten the text"
            )
        if checked and kind in POSTABLE_KINDS:
            await rails.check(self, kind, fields, audience, log_name, confirmed=confirmed)
        key = self.unlock()
        # Every refusal below comes before the log is made: a refused post changes
        # nothing (DESIGN principle 14).
        found, log, descriptor = await self._own_log(audience, log_name)
        name = found.name if found is not None else log_name or default_log_name(audience)
        # protocol.md §2.2: key events are made by `federation key`, and only there.
        if kind == Kind.KEY or log == key_log_id(self.club):
            raise UsageError(
                "key events are written by `federation key rotate | revoke`, into the "
                "club's keys log, which holds nothing else; choose another kind or --log"
            )
        if found is not None and found.frozen:
            raise UsageError(
                f"log {name!r} is frozen after a fork: two different events signed "
                "with this club's key hold one seq of it (this node was restored from an "
                "old backup and wrote again, or the key is used elsewhere); nothing more "
                "can be added to it. The proof is in `federation status`; post into "
                "another log (`--log NAME`), and if the key may be stolen, rotate it"
            )
        held = found.head.seq if found is not None and found.head else 0
        # protocol.md §3.6: this node was restored from a backup, and no peer has shown
        # it this log's head since, so its lost writes may be out there: the next event
        # could fork the log. The roster log too: it forks like any other. A log this
        # node does not hold may have been made after the backup (NEW_LOGS).
        if await waits_after_restore(self.store, log) is not None:
            release = (
                f"If no other node holds this log (a private log, or one no peer "
                f"received), run `federation declare-no-copies {name}`"
                if found is not None
                else "If no other node holds any log the club made after that backup, run "
                "`federation declare-no-copies --all`"
            )
            raise UsageError(
                f"log {name!r} may not be written yet: this node was restored from "
                "a backup and no peer has shown it this log's head since; run "
                f"`federation sync` first. {release}"
            )
        # protocol.md §3.6: a peer sent a validly signed event of ours beyond our head,
        # so this node lost writes (restored from an old backup); writing now would
        # fork the club's own log. A bare claim never gets here (DESIGN principle 15),
        # and the roster log is never held back: `peers remove` must always work.
        if log != roster_log_id(self.club):
            guard = await holding_back(self.store, log, held)
            if guard is not None:
                raise UsageError(
                    f"log {name!r} is behind what peer {guard.peer or '?'} holds "
                    f"(a signed event of ours at seq {guard.seq}, here {held}): this node "
                    "looks restored from an old backup; run `federation sync` to catch up "
                    "before posting (pausing or removing that peer lifts this)"
                )
        record = found if found is not None else await self._open_log(log, descriptor)
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
        """An event by its id or a unique prefix of at least six hex digits: the one
        naming rule of `core.naming`, with the candidates listed when ambiguous."""
        text = hex_prefix(ref)
        if text is None:
            raise UsageError(
                f"EVENT must be an event id or a prefix of at least {MIN_PREFIX_HEX} hex "
                f"digits (from `federation log`); got {ref!r}"
            )
        prefix = bytes.fromhex(text[: len(text) // 2 * 2])
        found = {
            e.id: e
            for e in await self.store.events_by_id_prefix(prefix, limit=50)
            if e.id.hex().startswith(text)
        }
        if not found:
            raise UsageError(f"no event {ref!r} in this node; list events with `federation log`")
        names = {r.id: r.name for r in await self.store.logs()} if len(found) > 1 else {}
        labels = {i: f"{names.get(e.header.log, '?')}#{e.header.seq}" for i, e in found.items()}
        return found[resolve_id(text, found, what="event", labels=labels)]
