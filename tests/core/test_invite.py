"""Invites (protocol.md §5.1): text form, signature over who/where/which certificate."""

from __future__ import annotations

import base64
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core import canonical
from federation.core.invite import PREFIX, Invite, make_invite, read_invite
from federation.errors import UsageError
from tests.conftest import Club

CLUB = Club.make(b"club a")
OTHER = Club.make(b"club b")
URL = "https://club-a.example.org:8443"
FINGERPRINT = canonical.sha256(b"certificate")


def invite(url: str = URL, fingerprint: bytes = FINGERPRINT, name: str = "Club A") -> str:
    return make_invite(CLUB.key, CLUB.genesis, name, url, fingerprint)


def fields(text: str) -> Invite:
    body = text[len(PREFIX) :]
    return msgspec.json.decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), type=Invite)


def text_of(value: Invite) -> str:
    return PREFIX + base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


def signed_as(club: Club, url: str, fingerprint: bytes, name: str = "Club A") -> str:
    """An invite signed honestly by `club`, bypassing make_invite's own url check."""
    signature = club.key.sign(canonical.encode_invite(club.id, name, url, fingerprint))
    return text_of(Invite(club.genesis.hex(), name, url, fingerprint.hex(), signature.hex()))


def refused(text: str) -> str:
    with pytest.raises(UsageError) as info:
        read_invite(text)
    return info.value.message


def test_round_trip() -> None:
    got = read_invite(invite())
    assert got.club == CLUB.id
    assert bytes.fromhex(got.genesis) == CLUB.genesis
    assert (got.name, got.url, bytes.fromhex(got.fingerprint)) == ("Club A", URL, FINGERPRINT)


def test_text_form() -> None:
    text = invite()
    assert text.startswith(PREFIX)
    assert "=" not in text  # unpadded base64url: safe to paste anywhere
    assert read_invite(f"  {text}\n") == read_invite(text)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:9000"]
)
def test_plain_http_on_loopback_needs_no_fingerprint(url: str) -> None:
    assert read_invite(invite(url, b"")).url == url


def test_wrong_prefix() -> None:
    text = invite()
    assert "start with" in refused(text[len(PREFIX) :])
    assert "start with" in refused("fedinvite2:" + text[len(PREFIX) :])
    assert "start with" in refused("")


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t[:-10],
        lambda t: t[: len(PREFIX) + 5],
        lambda t: t + "AAAA",
        lambda t: PREFIX + "!!!!",
        lambda t: PREFIX + "A",  # an impossible base64 length
        lambda t: PREFIX,
    ],
)
def test_damaged_text(damage: Callable[[str], str]) -> None:
    assert "damaged" in refused(damage(invite()))


@given(st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    text = invite()
    index = data.draw(st.integers(len(PREFIX), len(text) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    char = data.draw(st.sampled_from(alphabet).filter(lambda c: c != text[index]))
    changed = text[:index] + char + text[index + 1 :]
    try:
        got = read_invite(changed)
    except UsageError:
        return
    # Only the unused low bits of the last character can change and still decode:
    # then it is the very same invite.
    assert got == read_invite(text)
    assert index == len(text) - 1


@pytest.mark.parametrize(
    "change",
    [
        {"url": "https://attacker.example.org:8443"},
        {"fingerprint": canonical.sha256(b"attacker certificate").hex()},
        {"name": "Club B"},
        {"genesis": OTHER.genesis.hex()},  # another club claiming this club's invite
    ],
    ids=["url", "fingerprint", "name", "genesis"],
)
def test_altered_invite_fails_its_signature(change: dict[str, str]) -> None:
    altered = msgspec.structs.replace(fields(invite()), **change)
    assert "altered" in refused(text_of(altered))


def test_signature_by_another_club_fails() -> None:
    honest = fields(invite())
    forged = OTHER.key.sign(canonical.encode_invite(CLUB.id, "Club A", URL, FINGERPRINT))
    assert "altered" in refused(text_of(msgspec.structs.replace(honest, signature=forged.hex())))


@pytest.mark.parametrize("host", ["club-a.example.org", "192.168.1.10", "[2001:db8::1]"])
def test_plain_http_off_loopback_is_refused(host: str) -> None:
    url = f"http://{host}:8080"
    with pytest.raises(UsageError, match="loopback"):
        invite(url, b"")
    assert "loopback" in refused(signed_as(CLUB, url, b""))  # even when signed


def test_https_without_fingerprint_is_refused() -> None:
    with pytest.raises(UsageError, match="fingerprint"):
        invite(URL, b"")
    assert "fingerprint" in refused(signed_as(CLUB, URL, b""))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://club-a.example.org",
        "https://",
        "club-a.example.org:8443",
        "https://club-a.example.org/peer",
        "https://[::1",  # unbalanced bracket
        "https://club-a.example.org:99999",  # no such port
        "https://club-a.example.org:port",
    ],
)
def test_bad_address_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match="https://host:port"):
        invite(url)
    assert "https://host:port" in refused(signed_as(CLUB, url, FINGERPRINT))


def test_unknown_fields_are_damage() -> None:
    raw = msgspec.json.encode({**msgspec.structs.asdict(fields(invite())), "extra": 1})
    text = PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert "damaged" in refused(text)
