"""The client half of the control socket: one request to the node running here.

While `federation run` is up, the commands that write (`post`, `erase`, `peers add|
pause|resume|remove`, `block`, `unblock`) send their request to the running node,
which holds the unlocked key and is the one writer of its store (node/control.py is
the server, and says what each request does). This half is imported by every such
command before it knows whether a node runs, so it imports the standard library
only: msgspec, asyncio and the node's modules cost more than the whole `post`
round trip on a small machine (measured in bench/RESULTS.md), and are loaded only
when no node answers and the command opens the store itself.

The wire, on a Unix stream socket, one request per connection:

    request   u32 length (big-endian) + a JSON object, at most MAX_REQUEST_BYTES
    reply     u32 length + one status byte (b"0" done, b"1" refused) + JSON:
              done: the result; refused: {"message", "exit_code", "error": its class}

A refusal is carried back as the same message and exit code the command would have
given without the node (`ControlError`).
"""

from __future__ import annotations

import _socket  # socket.py imports selectors, enum and more: a tenth of `post`'s time
import json
import os
import struct
from collections.abc import Mapping  # loaded at every start already: costs nothing
from pathlib import Path

from federation.errors import ControlError, FederationError

SOCKET_NAME = "control.sock"
# The largest request: a post of the largest payload (64 KiB, protocol.md §3.1) with
# every field JSON-escaped at worst 6 bytes a character, and room for the rest.
MAX_REQUEST_BYTES = 512 * 1024
# The largest reply: an event (header, signature, 64 KiB payload, in base64) or a peer
# record, with room to spare; a reply over it is a bug, refused rather than read.
MAX_REPLY_BYTES = 1024 * 1024
# How long a command waits for the running node's answer: a write waits behind the
# node's other writes (an ingest commits in large transactions), never for a network.
REPLY_TIMEOUT_S = 30.0
LENGTH = struct.Struct(">I")
DONE, REFUSED = b"0", b"1"
# AF_UNIX paths are at most 107 bytes on Linux; a longer one is reached through the
# directory's descriptor (/proc/self/fd/N/control.sock).
MAX_UNIX_PATH_BYTES = 100


def socket_path(root: Path) -> Path:
    return root / SOCKET_NAME


class ShortPath:
    """A path to `name` in directory `root` short enough for AF_UNIX, for as long
    as it is open (`with ShortPath(root, name) as path:`)."""

    def __init__(self, root: Path, name: str) -> None:
        self.full = str(root / name)
        self._fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.full)) <= MAX_UNIX_PATH_BYTES:
            return self.full
        self._fd = os.open(os.path.dirname(self.full), os.O_PATH | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{os.path.basename(self.full)}"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)


def peer_uid(sock: _socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _receive(sock: _socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError("the node closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def call(root: Path, request: Mapping[str, object]) -> bytes | None:
    """Send `request` to the node running in `root`; its result as JSON bytes.

    None when no node runs there (no socket, or a socket left by a node that
    stopped without removing it): the caller then opens the store itself. A
    refusal raises `ControlError` with the node's message and exit code."""
    body = json.dumps(request, separators=(",", ":")).encode()
    if len(body) > MAX_REQUEST_BYTES:
        raise ControlError(f"the request is {len(body)} bytes, over {MAX_REQUEST_BYTES}", 2)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            with ShortPath(root, SOCKET_NAME) as path:
                sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None  # nothing runs here: a stale socket file is one a dead node left
        except OSError as exc:
            raise ControlError(
                f"cannot reach the node running in {root} through {SOCKET_NAME}: "
                f"{exc.strerror or exc}; check the directory's owner and permissions",
                1,
            ) from None
        if peer_uid(sock) != os.getuid():
            # The node directory is ours and 0700: only a misconfiguration gets here.
            raise ControlError(
                f"{socket_path(root)} belongs to another user's process; refusing to send "
                "it anything. Stop that process and remove the file",
                1,
            )
        sock.settimeout(REPLY_TIMEOUT_S)
        try:
            sock.sendall(LENGTH.pack(len(body)) + body)
            (size,) = LENGTH.unpack(_receive(sock, LENGTH.size))
            if not 0 < size <= MAX_REPLY_BYTES:
                raise ControlError(f"the running node sent a reply of {size} bytes; a bug", 1)
            reply = _receive(sock, size)
        except TimeoutError:
            raise ControlError(
                f"the node running in {root} did not answer within {REPLY_TIMEOUT_S:.0f} s; "
                "see its log, or stop it and run the command again",
                1,
            ) from None
        except OSError as exc:
            raise ControlError(
                f"the node running in {root} dropped the request ({exc}); it may have "
                "stopped: check `federation status` before trying again, as it may have "
                "been done",
                1,
            ) from None
    finally:
        sock.close()
    status, result = reply[:1], reply[1:]
    if status == DONE:
        return result
    refused = json.loads(result)
    raise ControlError(str(refused["message"]), int(refused["exit_code"]), str(refused["error"]))


def refusal(exc: FederationError) -> bytes:
    """A refusal frame's body for `exc` (the server's side of `ControlError`)."""
    kind = exc.kind if isinstance(exc, ControlError) else type(exc).__name__
    refused = {"message": exc.message, "exit_code": exc.exit_code, "error": kind}
    return REFUSED + json.dumps(refused).encode()
