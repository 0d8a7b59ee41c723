"""The club's recovery secret as words people write down (protocol.md §2.1).

The recovery key is an ed25519 key whose 32-byte seed is the secret; the genesis
holds only sha256 of its public key. The secret is never stored on the node (DESIGN
principle 21): `init` shows it once, either as 24 BIP-39 words (`mnemonic`: 256 bits
of secret and an 8-bit checksum) or split k of n among members as SLIP-39 shares
(`shamir-mnemonic`: each share 33 words with its own checksum; any k give back the
same 32 bytes, fewer give nothing). Whoever revokes a seized key (`core/keys.py`)
types the words or the shares back in here.

Every error is one line saying what was wrong with which words and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mnemonic
from shamir_mnemonic import MnemonicError, Share, shamir
from shamir_mnemonic.share import ShareCommonParameters

from federation.core import canonical, crypto
from federation.core.canonical import Genesis
from federation.errors import UsageError
from federation.node.system import random_bytes

SEED_BYTES = crypto.SECRET_KEY_BYTES  # the ed25519 seed: 32 bytes, 24 BIP-39 words
WORDS = 24
# SLIP-39 allows up to 16 shares; a club of 5 to 15 members fits (DESIGN "Who uses it").
MAX_SHARES = 16
# SLIP-39's own key stretching of the split secret (iteration exponent 1: 20,000 PBKDF2
# rounds per share set): the shares carry no passphrase, so this only costs time.
_ITERATION_EXPONENT = 1

_bip39 = mnemonic.Mnemonic("english")
# The labels the recovery sheet puts before the words (cli/safety.py `recovery_sheet`):
# a file written by `--recovery-out`, or a line copied from it, is read as it is.
_WORDS_LABEL = re.compile(r"^\s*recovery words\s*:", re.IGNORECASE)
_SHARE_LABEL = re.compile(r"^\s*share \d+ of \d+ \(any \d+ recover\)\s*:", re.IGNORECASE)


def _labelled(text: str, label: re.Pattern[str]) -> list[str]:
    """What follows `label` on each line of `text` that begins with it."""
    return [line[m.end() :] for line in text.splitlines() if (m := label.match(line))]


def words(seed: bytes) -> str:
    """The 24 BIP-39 words that encode exactly `seed` (32 bytes)."""
    _check_seed(seed)
    return _bip39.to_mnemonic(seed)


def split(seed: bytes, k: int, n: int) -> list[str]:
    """`seed` split into `n` SLIP-39 shares of which any `k` recover it (one group)."""
    _check_seed(seed)
    check_threshold(k, n)
    identifier = int.from_bytes(random_bytes(2)) & ((1 << shamir.ID_LENGTH_BITS) - 1)
    ems = shamir.EncryptedMasterSecret.from_master_secret(
        seed, b"", identifier, True, _ITERATION_EXPONENT
    )
    with _system_randomness():
        groups = shamir.split_ems(1, [(k, n)], ems)
    return [share.mnemonic() for share in groups[0]]


def check_threshold(k: int, n: int) -> None:
    if not 2 <= k <= n <= MAX_SHARES:
        raise UsageError(
            f"cannot split the recovery secret {k} of {n}: give K/N with 2 <= K <= N <= "
            f"{MAX_SHARES}, e.g. 3/5 (three of five members together can recover)"
        )


def parse_threshold(text: str) -> tuple[int, int]:
    """`K/N` as typed on the command line, e.g. "3/5"."""
    k, slash, n = text.partition("/")
    if not (slash and k.strip().isdigit() and n.strip().isdigit()):
        raise UsageError(f"--recovery-shares takes K/N, e.g. 3/5; got {text!r}")
    check_threshold(int(k), int(n))
    return int(k), int(n)


def signing_key_from_words(text: str) -> crypto.SigningKey:
    """The recovery key from its 24 BIP-39 words (spaces and case do not matter; the
    recovery sheet's own file, or its "recovery words:" line, is read as it is)."""
    words_line = _labelled(text, _WORDS_LABEL)
    if words_line:
        text = " ".join(words_line)
    elif _labelled(text, _SHARE_LABEL):
        raise UsageError(
            "these are recovery shares, not the 24 recovery words: give each member's "
            "share with --share FILE"
        )
    typed = text.lower().split()
    if len(typed) != WORDS:
        raise UsageError(
            f"the recovery words are {WORDS} words; {len(typed)} were given: type all "
            f"{WORDS}, in order, separated by spaces"
        )
    unknown = [(i, w) for i, w in enumerate(typed, start=1) if w not in _bip39.wordlist]
    if unknown:
        i, w = unknown[0]
        raise UsageError(
            f"word {i} ({w!r}) is not a recovery word; check its spelling on the paper"
        )
    try:
        seed = bytes(_bip39.to_entropy(typed))
    except ValueError:
        raise UsageError(
            "the recovery words fail their checksum: a word is wrong or two are swapped; "
            "check them against the paper, in order"
        ) from None
    return crypto.SigningKey(seed)


def signing_key_from_shares(typed: list[str]) -> crypto.SigningKey:
    """The recovery key from k of its SLIP-39 shares (each text one share, or lines of
    the recovery sheet, "share i of n (any k recover): ...", one share a line)."""
    texts: list[str] = []
    for text in typed:
        if _labelled(text, _WORDS_LABEL):
            raise UsageError(
                "these are the 24 recovery words, not a share: give them with --words-file FILE"
            )
        texts += _labelled(text, _SHARE_LABEL) or [text]
    shares: list[Share] = []
    seen: dict[int, int] = {}
    for number, text in enumerate(texts, start=1):
        share = _share(number, text)
        # The set first: two sets' shares can hold the same member index.
        if shares and share.common_parameters() != shares[0].common_parameters():
            raise UsageError(
                f"these shares come from different sets (shares 1 and {number}: another "
                "club's, or an older split): every share of one set begins with the same "
                "first two words; use one set"
            )
        if share.index in seen:
            raise UsageError(
                f"share {number} is the same member's share as share {seen[share.index]} "
                "(typed twice?); each member's share counts once: ask another member"
            )
        seen[share.index] = number
        shares.append(share)
    if not shares:
        raise UsageError("no recovery shares given; each member holding one types it in")
    common: set[ShareCommonParameters] = {s.common_parameters() for s in shares}
    if len(common) != 1 or len({(s.group_index, s.member_threshold) for s in shares}) != 1:
        raise UsageError(
            "these shares come from different sets (another club's, or an older split): "
            "every share of one set begins with the same first two words; use one set"
        )
    needed = shares[0].member_threshold
    if shares[0].group_threshold != 1 or shares[0].group_count != 1:
        raise UsageError(
            "these shares are a multi-group SLIP-39 split, which federation does not make; "
            "use the shares `federation init` or `recovery move-off` printed"
        )
    if len(shares) < needed:
        raise UsageError(
            f"{len(shares)} of the {needed} shares needed: ask {needed - len(shares)} more "
            f"{'member' if needed - len(shares) == 1 else 'members'} to type theirs"
        )
    try:
        seed = shamir.combine_mnemonics([s.mnemonic() for s in shares[:needed]])
    except MnemonicError as exc:
        raise UsageError(
            f"these shares do not fit together ({exc}); check each against its paper"
        ) from None
    if len(seed) != SEED_BYTES:
        raise UsageError(
            f"these shares hold a {len(seed)}-byte secret, not a {SEED_BYTES}-byte "
            "recovery key: they are not a federation recovery split"
        )
    return crypto.SigningKey(seed)


def check_recovery(key: crypto.SigningKey, genesis: Genesis) -> None:
    """Raise unless `key` is the recovery key the club's genesis commits to (§2.1)."""
    if genesis.recovery == bytes(32):
        raise UsageError(
            "this club was created without a recovery key: nothing can revoke its key; "
            "after a seizure its members must create a new club"
        )
    if canonical.sha256(key.public) != genesis.recovery:
        raise UsageError(
            "these words are not this club's recovery secret (they make another key than "
            "the one its genesis names); check the club, and the words or shares"
        )


def _share(number: int, text: str) -> Share:
    normal = " ".join(text.lower().split())
    try:
        return Share.from_mnemonic(normal)
    except MnemonicError as exc:
        reason = str(exc).rstrip(".")
        raise UsageError(
            f"share {number} is not a valid recovery share ({reason}); check its words "
            "against the paper, in order"
        ) from None


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise UsageError(f"a recovery secret is {SEED_BYTES} bytes, not {len(seed)}")


@contextmanager
def _system_randomness() -> Iterator[None]:
    # shamir-mnemonic draws its polynomial coefficients from a module global (made to be
    # replaced for tests); the node's randomness comes from one place (node/system.py).
    before: Callable[[int], bytes] = shamir.RANDOM_BYTES
    shamir.RANDOM_BYTES = random_bytes
    try:
        yield
    finally:
        shamir.RANDOM_BYTES = before
