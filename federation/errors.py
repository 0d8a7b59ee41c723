"""The one exception tree of federation.

    FederationError                 anything an operator can act on
    ├── UsageError                  a bad command-line argument (exit 2)
    ├── ConfigError                 a malformed node config; names the field (exit 2)
    ├── KeyFileError                missing, corrupt or locked key file, wrong passphrase,
    │                               a passphrase file missing or open to others (exit 1)
    ├── InvalidEventError           an event or batch that does not verify; names club/log/seq
    │   └── ForkError               two signed events at one (log, seq): carries both
    ├── LocalProtocolError          we used the protocol wrongly (a bug or bad call)
    ├── RemoteProtocolError         a peer misbehaved; carries the error code to send back
    ├── PeerUnavailableError        a peer could not be reached
    ├── StoreError                  the store cannot be opened, is locked, or is inconsistent
    └── ControlError                the running node refused a command sent through its
                                    control socket: its message and exit code, carried back

Any other exception escaping the package is a bug. Every message says what was
wrong, where, and what to do; it fits on one line so the CLI can print it as is.
"""

from __future__ import annotations


class FederationError(Exception):
    """Base of every error an operator can act on."""

    exit_code = 1
    # Messages quote outside text (a peer's bytes, a config value, an invite, an
    # argument): each is kept to one line of printable text, at most this long.
    MAX_MESSAGE_CHARS = 1000

    def __init__(self, message: str) -> None:
        message = _one_line(message, self.MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(FederationError):
    exit_code = 2


class ConfigError(FederationError):
    exit_code = 2

    def __init__(self, message: str, *, path: str = "", field: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.field = field


class KeyFileError(FederationError):
    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class InvalidEventError(FederationError):
    """An event that does not verify. `where` names it as club/log/seq when known."""

    def __init__(
        self,
        reason: str,
        *,
        club: bytes | None = None,
        log: bytes | None = None,
        seq: int | None = None,
    ) -> None:
        self.reason = reason
        self.club = club
        self.log = log
        self.seq = seq
        super().__init__(f"{self.where()}: {reason}" if self.where() else reason)

    def where(self) -> str:
        # Ids, as this tree knows no names: the CLI names the places in this form where
        # it shows them (cli/names.py `name_places`), so keep the two in step.
        parts = []
        if self.club is not None:
            parts.append(f"club {self.club.hex()[:16]}")
        if self.log is not None:
            parts.append(f"log {self.log.hex()[:16]}")
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        return " ".join(parts)


class ForkError(InvalidEventError):
    """Two different events signed for one (log, seq): proof that a key equivocated.

    `ours` and `theirs` are the exact signed headers (header + signature) of both.
    """

    def __init__(self, *, club: bytes, log: bytes, seq: int, ours: bytes, theirs: bytes) -> None:
        self.ours = ours
        self.theirs = theirs
        super().__init__(
            "fork: two different signed events at this seq; the log is frozen and the "
            "evidence kept (see `federation status`)",
            club=club,
            log=log,
            seq=seq,
        )


class LocalProtocolError(FederationError):
    """We called the protocol wrongly: a bug in the caller, never the peer's fault."""


class RemoteProtocolError(FederationError):
    """The peer broke the protocol. `code` is the error code to send back (protocol.md §7).

    Its words can be the peer's own (an Error frame, msgspec echoing its bytes), and they
    reach the operator's terminal, the log and the peer status: so both are kept to one
    bounded line of printable text, whatever the peer sent.
    """

    MAX_MESSAGE_CHARS = 500
    MAX_CODE_CHARS = 40

    def __init__(self, message: str, *, code: str = "malformed", http_status: int = 400) -> None:
        super().__init__(_one_line(message, self.MAX_MESSAGE_CHARS))
        self.code = _one_line(code, self.MAX_CODE_CHARS)
        self.http_status = http_status


def _one_line(text: str, limit: int) -> str:
    """`text` with every unprintable character (newline, escape) as "?", cut at `limit`."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


class PeerUnavailableError(FederationError):
    def __init__(self, message: str, *, peer: str = "") -> None:
        super().__init__(message)
        self.peer = peer


class StoreError(FederationError):
    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ControlError(FederationError):
    """A command the running node refused (node/control.py): the FederationError it
    raised there, as its message and exit code, so the command fails as it would have
    without the node."""

    def __init__(self, message: str, exit_code: int, kind: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind  # the class of the error raised there, e.g. "UsageError"
