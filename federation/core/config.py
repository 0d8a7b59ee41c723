"""The node configuration: TOML decoded into frozen Structs that reject unknown fields.

Parsing is pure (text in, Config out). Errors name the file and the field path, as
msgspec reports it (`$.node.listen`), and say what to do.
"""

from __future__ import annotations

import ipaddress
import tomllib
from typing import Annotated, Literal

import msgspec

from federation.errors import ConfigError

CONFIG_FILE = "config.toml"
DEFAULT_PORT = 8401

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
HexId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class ClubSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    id: HexId


class NodeSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # host:port the node serves peers and the feed on.
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    # The address other clubs use to reach this node, put in invites. Empty: derived
    # from `listen`.
    public_url: str = ""
    # Plain HTTP instead of TLS: for tests and demos on loopback only (protocol.md §5.3).
    plain_http: bool = False
    store: str = "store.sqlite"


class KeySection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    file: str = "club.key"
    # How the passphrase reaches the node: "prompt" (ask; or FEDERATION_PASSPHRASE if
    # set), "file" (read passphrase_file), or "none" (the key file is unencrypted).
    passphrase: Literal["prompt", "file", "none"] = "prompt"
    passphrase_file: str = ""


class FeedSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # host:port the read-only public feed is served on (web/feed.py), apart from the
    # peer API. Plain HTTP: put a TLS proxy in front of it to publish it.
    listen: str
    # The reverse proxies in front of the feed, as addresses or CIDR networks: a
    # request from one of them is limited as the client its X-Forwarded-For names
    # (feed_guard.client_address). Empty: every request is its TCP peer's.
    trusted_proxies: tuple[str, ...] = ()


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    club: ClubSection
    node: NodeSection = NodeSection()
    key: KeySection = KeySection()
    # The public feed: off when the section is absent.
    feed: FeedSection | None = None


def parse_listen(listen: str, field: str = "node.listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{field} must be host:port, e.g. 127.0.0.1:{DEFAULT_PORT}; got {listen!r}",
            field=field,
        )
    return host.strip("[]"), int(port)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(values: tuple[str, ...]) -> tuple[Network, ...]:
    """`feed.trusted_proxies` as networks (an address is a network of one)."""
    field = "feed.trusted_proxies"
    networks = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError:
            try:  # an address with its host bits set: say which network was meant
                meant = f' (did you mean "{ipaddress.ip_network(value.strip(), strict=False)}"?)'
            except ValueError:
                meant = ""
            raise ConfigError(
                f"{field}: {value!r} is not an IP address or network{meant}; write an "
                'address such as "127.0.0.1" or a network such as "10.0.0.0/8"',
                field=field,
            ) from None
        if network.prefixlen == 0:
            # Every address trusted: any client could name its own address.
            raise ConfigError(
                f"{field}: {value!r} trusts every address, so any client could name its "
                "own; list only the addresses of your reverse proxies",
                field=field,
            )
        networks.append(network)
    return tuple(networks)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_config(text: str, path: str = CONFIG_FILE) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file", path=path) from None
    except (ValueError, RecursionError):
        # tomllib lets these through: int() refusing a number of over 4300 digits, and
        # arrays or tables nested deeper than Python's stack.
        raise ConfigError(
            f"{path}: not valid TOML (a number too long or nesting too deep); fix the file",
            path=path,
        ) from None
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else ""
        raise ConfigError(f"{path}: {message}; fix that field", path=path, field=field) from None
    try:
        host, _ = parse_listen(config.node.listen)
        if config.feed is not None:
            parse_listen(config.feed.listen, "feed.listen")
            parse_trusted_proxies(config.feed.trusted_proxies)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", path=path, field=exc.field) from None
    if config.node.plain_http and not is_loopback(host):
        raise ConfigError(
            f"{path}: node.plain_http is allowed only when node.listen is a loopback "
            "address; remove plain_http to use TLS",
            path=path,
            field="node.plain_http",
        )
    if config.key.passphrase == "file" and not config.key.passphrase_file:
        raise ConfigError(
            f'{path}: key.passphrase = "file" needs key.passphrase_file',
            path=path,
            field="key.passphrase_file",
        )
    return config


def render_config(
    name: str,
    club: str,
    listen: str,
    *,
    passphrase: str,
    plain_http: bool,
    passphrase_file: str = "",
    feed_listen: str = "",
) -> str:
    """The config file `federation init` writes, with comments for the operator."""
    quoted = msgspec.json.encode(name).decode()  # a JSON string is a valid TOML basic string
    return (
        '# federation node configuration (see README.md, "Running a real club node").\n'
        "[club]\n"
        f"name = {quoted}\n"
        "# Fixed at creation: the club's identity, not its current signing key.\n"
        f'id = "{club}"\n\n'
        "[node]\n"
        f'listen = "{listen}"\n'
        '# public_url = "https://club.example.org:8401"  # what invites tell other clubs\n'
        f"plain_http = {'true' if plain_http else 'false'}\n"
        'store = "store.sqlite"\n\n'
        "[key]\n"
        'file = "club.key"\n'
        "# prompt (or FEDERATION_PASSPHRASE), file (passphrase_file), none (unencrypted)\n"
        f'passphrase = "{passphrase}"\n'
        + (
            f"passphrase_file = {msgspec.json.encode(passphrase_file).decode()}\n"
            if passphrase_file
            else ""
        )
        + (
            '\n# The read-only public feed (README.md, "The public feed"); remove to turn it off.\n'
            f'[feed]\nlisten = "{feed_listen}"\n'
            if feed_listen
            else ""
        )
    )
