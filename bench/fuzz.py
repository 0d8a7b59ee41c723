"""`python -m bench.fuzz TARGET [libFuzzer options]`: a longer, coverage-guided fuzz run.

The same decoders and seeds as tests/test_fuzz.py, under atheris (libFuzzer), for a
run of minutes instead of the suite's seconds. atheris is not a dependency:

    .venv/bin/pip install atheris
    .venv/bin/python -m bench.fuzz list
    .venv/bin/python -m bench.fuzz config -max_total_time=600 -artifact_prefix=/tmp/fuzz-

A finding is an exception other than the target's FederationError subclass, or an
error message that is not one bounded printable line; libFuzzer writes the input to
a crash-* file. Fix the decoder and add the input as an @example in tests/test_fuzz.py.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:  # pragma: no cover - atheris is optional
    sys.exit("bench.fuzz needs atheris: .venv/bin/pip install atheris")

with atheris.instrument_imports(include=["federation"]):
    import msgspec

    from federation.core import canonical, payloads
    from federation.core.config import parse_config
    from federation.core.events import VerifiedEvent, verify_event, verify_run
    from federation.core.invite import read_invite
    from federation.errors import (
        ConfigError,
        FederationError,
        InvalidEventError,
        RemoteProtocolError,
        UsageError,
    )
    from federation.sync import auth, messages
    from federation.views import projection
    from tests import test_fuzz as seeds
    from tests.conftest import BASE_TIME_US


def _message(data: bytes) -> None:
    messages.decode(data)


def _frames(data: bytes) -> None:
    # Fed in two pieces (the first byte says where to cut): frames split across reads.
    reader = messages.FrameReader()
    cut = data[0] if data else 0
    list(reader.feed(data[:cut]))
    list(reader.feed(data[cut:]))


def _header(data: bytes) -> None:
    canonical.decode_header(data)


def _event(data: bytes) -> None:
    size = canonical.SIGNED_HEADER_BYTES
    verify_event(data[:size], data[size:] or None, seeds.CLUB.authorized)


def _run(data: bytes) -> None:
    size = canonical.SIGNED_HEADER_BYTES
    first = seeds.EVENTS[0]
    run = [(first.signed, first.payload), (data[:size], data[size:] or None)]
    _, error = verify_run(seeds.CLUB.log(), None, run, seeds.CLUB.authorized)
    if error is not None:
        raise error


def _genesis(data: bytes) -> None:
    canonical.decode_genesis(data)


def _log(data: bytes) -> None:
    canonical.decode_log(data)


def _token(data: bytes) -> None:
    for header in (seeds.as_text(data), "Federation " + base64.urlsafe_b64encode(data).decode()):
        auth.check(
            header,
            recipient=seeds.RECIPIENT,
            method=seeds.METHOD,
            target=seeds.TARGET,
            body=seeds.BODY,
            now_us=BASE_TIME_US,
            authorized=seeds.CLUB.authorized,
            replay=auth.ReplayGuard(),
        )


def _invite(data: bytes) -> None:
    read_invite(seeds.as_text(data))


def _config(data: bytes) -> None:
    parse_config(data.decode("utf-8", "replace"))


def _import(data: bytes) -> None:
    seeds.import_lines(data.split(b"\n"))


def _payload(data: bytes) -> None:
    kind, payload = (data[0], data[1:]) if data else (0, b"")
    payloads.read_payload(kind, payload)
    payloads.summary(kind, payload)
    for k in (canonical.Kind.ACTION, canonical.Kind.CAMPAIGN):
        header = msgspec.structs.replace(seeds.EVENTS[0].header, kind=int(k))
        projection.fold({}, [VerifiedEvent(b"i" * 32, header, seeds.SIGNED[0], payload)])


def _frames_seeds() -> list[bytes]:
    return [b"".join(messages.frame(m) for m in seeds.MESSAGES)]


Target = tuple[Callable[[bytes], None], type[FederationError], list[bytes]]

TARGETS: dict[str, Target] = {
    "message": (_message, RemoteProtocolError, seeds.ENCODED),
    "frames": (_frames, RemoteProtocolError, _frames_seeds()),
    "header": (_header, InvalidEventError, seeds.SIGNED),
    "event": (_event, InvalidEventError, [e.signed + (e.payload or b"") for e in seeds.EVENTS]),
    "run": (_run, InvalidEventError, [e.signed + (e.payload or b"") for e in seeds.EVENTS[1:]]),
    "genesis": (_genesis, InvalidEventError, [seeds.CLUB.genesis]),
    "log": (_log, InvalidEventError, seeds.DESCRIPTORS),
    "token": (_token, RemoteProtocolError, [seeds.TOKEN.encode(), seeds.TOKEN_RAW]),
    "invite": (_invite, UsageError, [i.encode() for i in seeds.INVITES]),
    "config": (_config, ConfigError, [c.encode() for c in seeds.CONFIGS]),
    "import": (_import, InvalidEventError, [b"\n".join(seeds.EXPORT)]),
    "payload": (
        _payload,
        FederationError,
        [bytes([k]) + p for k, p in zip(canonical.Kind, seeds.VALID_PAYLOADS, strict=True)],
    ),
}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        print("targets:", " ".join(TARGETS), file=sys.stderr)
        sys.exit(0 if len(argv) > 1 and argv[1] == "list" else 2)
    decode, expected, valid = TARGETS[argv[1]]

    def one_input(data: bytes) -> None:
        try:
            decode(data)
        except expected as exc:
            seeds.check_message(exc)

    # The seeds go to a fresh corpus directory: libFuzzer mutates real encodings first.
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{argv[1]}-"))
    for i, seed in enumerate(valid):
        (corpus / f"seed-{i}").write_bytes(seed)
    print(f"corpus: {corpus}", file=sys.stderr)
    atheris.Setup([argv[0], *argv[2:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
