"""Request authentication between nodes (protocol.md §5.2): tokens, failure codes, replays."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core import canonical
from federation.core.canonical import REQUEST_NONCE_BYTES, RequestToken
from federation.errors import RemoteProtocolError
from federation.node.system import random_bytes
from federation.sync import auth
from federation.sync.auth import MAX_CLOCK_SKEW_US, ReplayGuard
from tests.conftest import BASE_TIME_US, Club

NOW_US = BASE_TIME_US
METHOD, TARGET, BODY = "POST", "/peer/events?wait=1", b'{"want":[]}'
SENDER = Club.make(b"club a")
RECIPIENT = Club.make(b"club b").id


def token(*, now_us: int = NOW_US, sender: Club = SENDER) -> str:
    return auth.make(
        sender.key,
        sender=sender.id,
        recipient=RECIPIENT,
        method=METHOD,
        target=TARGET,
        body=BODY,
        now_us=now_us,
        nonce=random_bytes(REQUEST_NONCE_BYTES),
    )


def check(
    header: str | None,
    *,
    recipient: bytes = RECIPIENT,
    method: str = METHOD,
    target: str = TARGET,
    body: bytes = BODY,
    now_us: int = NOW_US,
    replay: ReplayGuard | None = None,
) -> bytes | None:
    return auth.check(
        header,
        recipient=recipient,
        method=method,
        target=target,
        body=body,
        now_us=now_us,
        authorized=SENDER.authorized,
        replay=replay if replay is not None else ReplayGuard(),
    )


def anonymous(header: str | None, **changes: object) -> bool:
    """The token does not authenticate: the request is served as an anonymous reader,
    exactly as one without a token (protocol.md §5.2)."""
    return check(header, **changes) is None  # type: ignore[arg-type]


def refused(header: str | None, **changes: object) -> str:
    """The code of the refusal; every refusal is a 401."""
    with pytest.raises(RemoteProtocolError) as info:
        check(header, **changes)  # type: ignore[arg-type]
    assert info.value.http_status == 401
    return info.value.code


def raw(header: str) -> bytes:
    return base64.urlsafe_b64decode(header.removeprefix("Federation "))


def header_of(data: bytes) -> str:
    return "Federation " + base64.urlsafe_b64encode(data).decode()


def test_round_trip() -> None:
    assert check(token()) == SENDER.id


def test_token_is_canonical_request_and_signature() -> None:
    parsed, signed, signature = canonical.decode_request(raw(token()))
    assert parsed.sender == SENDER.id
    assert parsed.recipient == RECIPIENT
    assert parsed.time_us == NOW_US
    assert parsed.body_hash == canonical.sha256(BODY)
    assert (parsed.method, parsed.target) == (METHOD, TARGET)
    assert signed == canonical.encode_request(parsed)
    assert len(signature) == canonical.SIGNATURE_BYTES


def test_no_header_is_anonymous() -> None:
    assert check(None) is None


def test_nonces_differ() -> None:
    assert canonical.decode_request(raw(token()))[0].nonce != (
        canonical.decode_request(raw(token()))[0].nonce
    )


# --- a token that does not authenticate makes an anonymous reader (no oracle: §5.2) ---


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        "Federation",
        "Federation !!!!",
        "Federation abc",  # bad padding
        "Federation " + base64.urlsafe_b64encode(b"x" * 300).decode(),
        "Federation " + base64.urlsafe_b64encode(b"").decode(),
    ],
)
def test_garbage_is_unauthenticated(header: str) -> None:
    assert anonymous(header)


def test_truncated_token_is_unauthenticated() -> None:
    assert anonymous(header_of(raw(token())[:-1]))


def test_trailing_bytes_are_refused() -> None:
    assert anonymous(header_of(raw(token()) + b"\x00"))


def test_other_recipient() -> None:
    assert anonymous(token(), recipient=SENDER.id)


@pytest.mark.parametrize(
    "changes",
    [{"method": "GET"}, {"target": "/peer/events"}, {"body": b"{}"}],
    ids=["method", "target", "body"],
)
def test_request_token_for_another_request(changes: dict[str, object]) -> None:
    assert anonymous(token(), **changes)


def test_bad_signature() -> None:
    data = bytearray(raw(token()))
    data[-1] ^= 0x01
    assert anonymous(header_of(bytes(data)))


@pytest.mark.parametrize("skew_us", [MAX_CLOCK_SKEW_US + 1, -MAX_CLOCK_SKEW_US - 1])
def test_expired_either_way(skew_us: int) -> None:
    # Positive: the token is older than the window; negative: it is from the future.
    assert refused(token(), now_us=NOW_US + skew_us) == "expired"


@pytest.mark.parametrize("skew_us", [MAX_CLOCK_SKEW_US, -MAX_CLOCK_SKEW_US])
def test_skew_at_the_window_is_accepted(skew_us: int) -> None:
    assert check(token(), now_us=NOW_US + skew_us) == SENDER.id


def test_unknown_club() -> None:
    assert anonymous(token(sender=Club.make(b"club c")))


def test_known_club_signing_with_another_key() -> None:
    stranger = Club.make(b"club c")
    header = auth.make(
        stranger.key,
        sender=SENDER.id,
        recipient=RECIPIENT,
        method=METHOD,
        target=TARGET,
        body=BODY,
        now_us=NOW_US,
        nonce=random_bytes(REQUEST_NONCE_BYTES),
    )
    assert anonymous(header)


def test_replayed() -> None:
    guard = ReplayGuard()
    header = token()
    assert check(header, replay=guard) == SENDER.id
    assert refused(header, replay=guard) == "replayed"
    assert check(token(), replay=guard) == SENDER.id  # a fresh token is fine


def test_forged_token_with_a_valid_signature_of_other_fields() -> None:
    # Swap in another request's fields under this signature: the signature fails.
    parsed, _, signature = canonical.decode_request(raw(token()))
    other = RequestToken(
        parsed.sender,
        parsed.recipient,
        parsed.time_us,
        parsed.nonce,
        parsed.body_hash,
        parsed.key,
        "GET",
        parsed.target,
    )
    header = header_of(canonical.encode_request(other) + signature)
    assert anonymous(header, method="GET")


# --- any flipped byte fails ------------------------------------------------------------------

TOKEN = raw(token())


@given(st.integers(0, len(TOKEN) - 1), st.integers(1, 255))
def test_any_flipped_byte_fails(index: int, mask: int) -> None:
    data = bytearray(TOKEN)
    data[index] ^= mask
    assert anonymous(header_of(bytes(data)))


def test_every_byte_flipped_fails() -> None:
    # Exhaustive over positions (one mask), besides the random masks above.
    for index in range(len(TOKEN)):
        data = bytearray(TOKEN)
        data[index] ^= 0xFF
        assert anonymous(header_of(bytes(data)))


# --- the replay guard ------------------------------------------------------------------------


def test_guard_forgets_old_nonces_but_refuses_their_times() -> None:
    guard = ReplayGuard(capacity=2)
    guard.check_and_remember(b"a", 10, 10)
    guard.check_and_remember(b"b", 20, 20)
    guard.check_and_remember(b"c", 30, 30)  # "a" goes
    with pytest.raises(RemoteProtocolError) as info:
        guard.check_and_remember(b"a", 10, 30)
    assert info.value.code == "replayed"
    guard.check_and_remember(b"d", 40, 40)


def test_guard_forgets_by_time() -> None:
    guard = ReplayGuard()
    guard.check_and_remember(b"a", NOW_US, NOW_US)
    later = NOW_US + MAX_CLOCK_SKEW_US + 1
    guard.check_and_remember(b"b", later, later)  # "a" is past the window: forgotten
    with pytest.raises(RemoteProtocolError):
        guard.check_and_remember(b"a", NOW_US, later)


requests = st.lists(
    st.tuples(
        st.sampled_from([bytes([i]) * 16 for i in range(6)]),  # few nonces: many repeats
        st.integers(-3, 3),  # the token's time, relative to now, in skew windows / 2
        st.integers(0, 3),  # how far now moved on, in skew windows / 2
    ),
    max_size=40,
)


@given(st.integers(0, 5), requests)
def test_guard_never_accepts_a_replay(
    capacity: int, sequence: list[tuple[bytes, int, int]]
) -> None:
    guard = ReplayGuard(capacity=capacity)
    accepted: set[tuple[bytes, int]] = set()
    now = NOW_US
    half = MAX_CLOCK_SKEW_US // 2
    for nonce, offset, step in sequence:
        now += step * half
        time_us = now + offset * half  # within the window, as check() lets through
        try:
            guard.check_and_remember(nonce, time_us, now)
        except RemoteProtocolError as exc:
            refusal: RemoteProtocolError | None = exc
        else:
            refusal = None
        if refusal is not None:
            assert refusal.code == "replayed"
            continue
        assert (nonce, time_us) not in accepted, "a replay was accepted"
        assert len(guard._seen) <= max(capacity, 1)
        accepted.add((nonce, time_us))


@given(st.lists(st.integers(1, 10), max_size=30))
def test_guard_accepts_fresh_nonces(steps: list[int]) -> None:
    # Honest traffic (new nonces, times = now, a clock moving on) is never refused, even
    # past capacity: only a time at or before the oldest forgotten one is.
    guard = ReplayGuard(capacity=5)
    now = NOW_US
    for i, step in enumerate(steps):
        now += step
        guard.check_and_remember(i.to_bytes(16, "big"), now, now)
