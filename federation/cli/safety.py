"""The CLI's commands that keep a club safe from a seized machine: backup, restore,
declare-no-copies, and recovery move-off; and the recovery sheet `init` shows.

The rules live in node/backup.py, node/recovery.py and store/meta.py; these only
read the secrets people type or keep, and say what was done.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import os
import stat
import sys
from pathlib import Path

from federation.cli.output import Output, escape_unsafe, plural, progress, say
from federation.errors import UsageError
from federation.node import agefile, archive, backup, leftover, recovery
from federation.node.keyfile import (
    MIN_PASSPHRASE_CHARS,
    PASSPHRASE_ENV,
    open_key,
    read_key_file,
    read_passphrase_file,
)
from federation.node.node import Node, NodePaths, load_config, prompt_passphrase
from federation.node.system import random_bytes
from federation.store.base import LogRecord
from federation.store.meta import (
    NEW_LOGS,
    confirm_restored,
    restored_logs,
    waits_after_restore,
)

# --- secrets people type ------------------------------------------------------------


def age_passphrase(paths: NodePaths | None, *, confirm: bool, sealing: bool = True) -> bytes:
    """The passphrase an age file (export, backup) is sealed to (`sealing`) or opened
    with: the node's, from FEDERATION_PASSPHRASE or its passphrase file, else asked for."""
    return _age_passphrase(paths, confirm=confirm, sealing=sealing)[0]


def _age_passphrase(
    paths: NodePaths | None, *, confirm: bool, sealing: bool
) -> tuple[bytes, str | None]:
    """`age_passphrase`, and where it came from: FEDERATION_PASSPHRASE, the passphrase
    file's path, or None when it was typed."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env.encode(), PASSPHRASE_ENV
    if paths is not None:
        config = load_config(paths)
        if config.key.passphrase == "file":
            file = paths.resolve(config.key.passphrase_file)
            return read_passphrase_file(file), str(file)
        if config.key.passphrase == "none":
            return _file_passphrase(sealing=sealing), None
    return prompt_passphrase(confirm=confirm), None


def _file_passphrase(*, sealing: bool) -> bytes:
    """A node made with --no-passphrase has none to seal a file with: the file gets one
    of its own, typed twice (a typo would make it unopenable), never "the club key's".
    Opening such a file asks for it once, as it was given."""
    if not sys.stdin.isatty():
        other = "--to AGE_KEY; nothing was written" if sealing else "--identity FILE"
        raise UsageError(
            "this node has no passphrase (--no-passphrase), so the file has one of its "
            f"own: set {PASSPHRASE_ENV}, or give {other}"
        )
    if not sealing:
        return getpass.getpass("Passphrase of this file: ").encode()
    first = getpass.getpass("Passphrase for this file (the node has none): ")
    if len(first) < MIN_PASSPHRASE_CHARS:
        raise UsageError(
            f"the passphrase must be at least {MIN_PASSPHRASE_CHARS} characters; nothing "
            "was written"
        )
    if getpass.getpass("Again: ") != first:
        raise UsageError("the passphrases did not match; nothing was written: run it again")
    return first.encode()


def opening_secrets(args: argparse.Namespace, paths: NodePaths | None) -> dict[str, object]:
    """How to open an age file: --identity FILE, or a passphrase (and where it came
    from, for the line a wrong one gets: None when it was typed)."""
    if getattr(args, "identity", None):
        return {"identities": agefile.read_identities(args.identity)}
    passphrase, source = _age_passphrase(paths, confirm=False, sealing=False)
    return {"passphrase": passphrase, "source": source}


# --- the recovery sheet ---------------------------------------------------------------


def recovery_sheet(club: bytes, name: str, seed: bytes, shares: tuple[int, int] | None) -> str:
    """What `init` and `recovery move-off` show once: the recovery secret as words, or as
    k-of-n shares, each line for one member (protocol.md §2.1)."""
    head = [
        # The name is the operator's own, but it is shown as any club text is (DESIGN 19).
        f"RECOVERY SECRET of club “{escape_unsafe(name)}” ({club.hex()})",
        "Write this down now: it is NOT stored on this machine, and is shown only once.",
        "With it the club can revoke its signing key after a seizure and go on under a",
        "new one; whoever holds it can do the same, so keep it apart from the node.",
    ]
    if shares is None:
        body = [f"recovery words: {recovery.words(seed)}"]
    else:
        k, n = shares
        head.append(
            f"It is split in {n} shares: give each to a different member; any {k} of them "
            f"together recover it, fewer than {k} reveal nothing."
        )
        body = [
            f"share {i} of {n} (any {k} recover): {share}"
            for i, share in enumerate(recovery.split(seed, k, n), start=1)
        ]
    return "\n".join([*head, "", *body, ""]) + "\n"


def keep_sheet(sheet: str, out: str | None) -> list[str]:
    """Show the sheet on stderr, or write it to a new 0600 file; the lines to print."""
    if out is None:
        sys.stderr.write(sheet)
        sys.stderr.flush()
        return []
    write_new_file(out, sheet.encode(), command="federation", option="--recovery-out")
    return [
        f"the recovery secret is in {out}: move it off this machine (print it, or copy it "
        "to members) and delete it here; nothing on this node can revoke the club's key"
    ]


def check_sheet_target(out: str | None) -> None:
    if out is not None and os.path.lexists(out):
        raise UsageError(f"{out} already exists; choose another --recovery-out")


def add_recovery_sheet_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--recovery-shares",
        metavar="K/N",
        help="split the recovery secret among N members, any K of whom recover it (e.g. 3/5)",
    )
    c.add_argument(
        "--recovery-out",
        metavar="FILE",
        help="write the recovery secret to this new file (0600) instead of showing it",
    )


# --- status ---------------------------------------------------------------------------


async def status(node: Node) -> tuple[dict[str, object], list[str]]:
    """What `status` shows of a restore (protocol.md §3.6) and of a recovery secret
    still on the node (§2.1): its JSON fields and its lines."""
    waiting = await restored_logs(node.store)
    names = {r.id: r.name for r in await node.store.logs() if r.club == node.club}
    on_node = node.paths.recovery_key.exists()
    data: dict[str, object] = {
        "restored_waiting": [
            {"log": log.hex(), "name": names.get(log, ""), "seq": seq}
            for log, seq in waiting.items()
            if log != NEW_LOGS
        ],
        "recovery_key_on_node": on_node,
    }
    lines = []
    shown = sorted(names[log] for log in waiting if log in names)
    if shown:
        lines.append(
            f"HELD BACK after a restore: {', '.join(shown)}: a peer has not yet shown these "
            "logs' heads; run `federation sync`, or, for a log no other node holds, "
            "`federation declare-no-copies LOG`"
        )
    elif NEW_LOGS in waiting:
        lines.append(
            "HELD BACK after a restore: new logs wait for one sync with a peer "
            "(`federation sync`), or `federation declare-no-copies --all`"
        )
    if on_node:
        lines.append(
            f"warning: {node.paths.recovery_key} is on this node: whoever takes the machine "
            "and the passphrase can revoke the club's key; run `federation recovery move-off`"
        )
    loose = loose_modes(node.paths, node.paths.resolve(node.config.key.file))
    data["loose_modes"] = [{"path": str(p), "mode": f"{m:o}"} for p, m in loose]
    lines += [
        f"warning: {p} is open to other users (mode {m:o}): chmod {700 if p.is_dir() else 600} {p}"
        for p, m in loose
    ]
    return data, lines


def loose_modes(paths: NodePaths, key_file: Path) -> list[tuple[Path, int]]:
    """The node directory and the files in it the node made 0700/0600 that others may
    now open: copied by hand, through a FAT stick or `rsync` without modes (the store
    tightens its own files when it opens, store/cipher.py)."""
    found = []
    for path in (paths.root, paths.config, key_file, paths.tls_key, paths.tls_cert):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            found.append((path, mode))
    return found


# --- recovery move-off ----------------------------------------------------------------


def add_recovery_arguments(c: argparse.ArgumentParser) -> None:
    sub = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    move = sub.add_parser(
        "move-off",
        help="show recovery.key as words (or shares), then delete it from this node",
        description="show recovery.key as words (or shares), then delete it from this node",
    )
    move.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_recovery_sheet_arguments(move)
    move.add_argument(
        "--yes", action="store_true", help="do not ask whether the words were written down"
    )


def cmd_recovery(args: argparse.Namespace) -> Output:
    paths = NodePaths(Path(args.node))
    file = paths.recovery_key
    if not file.exists():
        raise UsageError(f"there is no {file}: the recovery secret is not on this node")
    shares = recovery.parse_threshold(args.recovery_shares) if args.recovery_shares else None
    check_sheet_target(args.recovery_out)
    interactive = args.recovery_out is None and not args.yes
    if interactive and not sys.stdin.isatty():
        raise UsageError(
            "no terminal to confirm the words were written down: give --yes, or "
            "--recovery-out FILE; nothing was changed"
        )
    data = read_key_file(file)
    # The node's passphrase opens both files; a node without one asks for none.
    none = load_config(paths).key.passphrase == "none" and PASSPHRASE_ENV not in os.environ
    passphrase = None if none else age_passphrase(paths, confirm=False)
    sheet = asyncio.run(_sheet_of(paths, data, passphrase, shares))  # one prompt, for both
    lines = keep_sheet(sheet, args.recovery_out)
    if interactive:
        answer = input("Type WRITTEN once the recovery secret is written down: ")
        if answer.strip().upper() != "WRITTEN":
            raise UsageError(f"not confirmed: {file} was kept; run the command again")
    _shred(file)
    lines.append(
        f"deleted {file} (overwritten first): the club's recovery secret is no longer on "
        "this node; keep the words (or shares) safe, apart from it"
    )
    return Output({"deleted": str(file), "shares": list(shares) if shares else None}, lines)


async def _sheet_of(
    paths: NodePaths, data: bytes, passphrase: bytes | None, shares: tuple[int, int] | None
) -> str:
    async with await Node.open(paths.root, passphrase=passphrase) as node:
        key = open_key(data, node.club, passphrase, str(paths.recovery_key))
        recovery.check_recovery(key, node.genesis[node.club])
        return recovery_sheet(node.club, node.config.club.name, key.secret_bytes(), shares)


def _shred(file: Path) -> None:
    """Overwrite, then delete. On SSDs and journaling file systems old blocks may
    survive (README): the sealed file was encrypted with the passphrase all along."""
    size = file.stat().st_size
    with open(file, "r+b") as f:
        f.write(random_bytes(size))
        f.flush()
        os.fsync(f.fileno())
    file.unlink()


# --- export and import, sealed (protocol.md §8) -------------------------------------


def add_export_sealing_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="AGE_RECIPIENT",
        help="encrypt to this member's age key (age1…), repeatable; default: the passphrase",
    )
    c.add_argument(
        "--plain",
        action="store_true",
        help="write JSON lines unencrypted even if non-public logs are in the export",
    )


async def export(node: Node, logs: list[LogRecord], args: argparse.Namespace) -> Output:
    """Write `logs`: sealed with age when any is not public (or --to is given), unless
    --plain; a file is created 0600 and never overwrites."""
    if args.plain and args.to:
        raise UsageError("--plain and --to contradict each other: choose one")
    hidden = [r for r in logs if r.audience.kind != "public"]
    recipients = agefile.parse_recipients(args.to)
    sealed = bool(recipients) or (bool(hidden) and not args.plain)
    to_file = bool(args.output) and args.output != "-"
    where = args.output if to_file else "standard output"
    if sealed and not to_file and sys.stdout.isatty():
        raise UsageError(
            "this export is encrypted (binary): give -o FILE, or --plain to write it unencrypted"
        )
    if to_file:
        _check_new(args.output, "--output", "export")
        sweep_partials_beside(args.output)  # after the checks: bad input changes nothing
    if hidden and not sealed:
        say(
            f"federation: warning: --plain: writing {plural(len(hidden), 'non-public log')} "
            f"({await _log_names(node, hidden)}) UNENCRYPTED to {where}: anyone who gets it "
            "reads them",
            file=sys.stderr,
        )
    total = sum(r.head.seq for r in logs if r.head)
    buffer = io.BytesIO()
    with progress(total, "export") as advance:
        count = await archive.export(node.store, buffer, logs, advance)
    data = buffer.getvalue()
    if sealed:
        # The node's passphrase, given once when the node opened (no second prompt).
        passphrase = (
            None if recipients else node.passphrase or age_passphrase(node.paths, confirm=True)
        )
        data = agefile.seal(data, passphrase=passphrase, recipients=recipients)
    if to_file:
        leftover.write_new(Path(args.output), data, command="export", option="--output")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    how = "encrypted (age)" if sealed else "unencrypted"
    say(
        f"exported {plural(count, 'event')} in {plural(len(logs), 'log')} to {where}, {how}",
        file=sys.stderr,
    )
    return Output({"events": count, "logs": len(logs), "encrypted": sealed}, [])


async def _log_names(node: Node, logs: list[LogRecord]) -> str:
    """Each log by its club's name and its own, the clubs in turn: logs of two clubs can
    share a name ("Alpha Tenants: federation, private; Beta Club: federation")."""
    from federation.cli.names import known_labels

    known = await known_labels(node)
    by_club: dict[str, list[str]] = {}
    for r in logs:
        by_club.setdefault(known(r.club), []).append(r.name)
    return "; ".join(
        f"{club}: {', '.join(sorted(names))}"
        for club, names in sorted(by_club.items(), key=lambda item: item[0].casefold())
    )


async def import_file(node: Node, args: argparse.Namespace) -> archive.ImportReport:
    """Import an export file (or - for standard input), opening it first if sealed."""
    data = _read_input(args.file)
    if agefile.is_age(data):
        what = "standard input" if args.file == "-" else args.file
        data = agefile.open_sealed(data, what, **opening_secrets(args, node.paths))  # type: ignore[arg-type]
    with progress(len(data) // 600, "import") as advance:
        return await archive.import_lines(
            node.store, node.genesis, io.BytesIO(data), node.clock(), advance
        )


def _check_new(path: str, option: str, command: str) -> None:
    """Refuse, before any work, a file that exists or that cannot be created."""
    if os.path.lexists(path):
        raise UsageError(
            f"{path} already exists and {command} never overwrites; choose another {option}"
        )
    if not Path(path).parent.is_dir():
        raise UsageError(f"cannot write {path}: No such file or directory")


def sweep_partials_beside(output: str) -> None:
    """Before writing a new file the user named: remove the partial files that
    commands killed midway left beside it (node/leftover.py), and say so."""
    for stale in leftover.sweep_partials(Path(os.path.abspath(output)).parent):
        say(
            f"federation: removed {stale}: a command writing a file there was interrupted "
            "and left it (the file it was writing, cut short)",
            file=sys.stderr,
        )


def write_new_file(path: str, data: bytes, *, command: str, option: str) -> None:
    """A new file the user named (`proposal export -o`, `calendar --ics`,
    `--recovery-out`): written 0600, whole or not at all, never over a file
    (node/leftover.py `write_new`); then what killed writers left beside it is removed
    (after: a refused path changes nothing)."""
    leftover.write_new(Path(path), data, command=command, option=option)
    sweep_partials_beside(path)


def _read_input(file: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None


# --- backup and restore ----------------------------------------------------------------


def add_backup_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("-o", "--output", required=True, help="the backup file to write (new)")
    c.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="AGE_RECIPIENT",
        help="encrypt to this member's age key (age1…), repeatable; default: the passphrase",
    )


def cmd_backup(args: argparse.Namespace) -> Output:
    paths = NodePaths(Path(args.node))
    out = Path(args.output)
    for stale in backup.sweep_snapshots(paths.root):  # a backup killed midway
        say(
            f"federation: removed {stale}: a backup that was interrupted left it there "
            "(a copy of the store)",
            file=sys.stderr,
        )
    _check_new(args.output, "-o", "backup")
    sweep_partials_beside(args.output)  # after the checks: bad input changes nothing
    recipients = agefile.parse_recipients(args.to)
    # The node's passphrase opens its store and, without --to, seals the backup.
    passphrase = None if recipients else age_passphrase(paths, confirm=False)
    plain, manifest = asyncio.run(_take_backup(paths, passphrase))
    sealed = agefile.seal(plain, passphrase=passphrase, recipients=recipients)
    backup.write_backup_file(out, sealed)
    lines = [
        f"backed up club “{manifest.name}” ({len(manifest.heads)} logs of its own) to {out}, "
        + (
            f"encrypted to {len(recipients)} age key(s)"
            if recipients
            else "encrypted with the passphrase"
        ),
        "restore it with `federation restore FILE NEWDIR`; a restored node writes again "
        "only after a sync (protocol.md §3.6)",
    ]
    if paths.recovery_key.exists():
        lines.append(
            f"{paths.recovery_key} was left out: it belongs off the node "
            "(`federation recovery move-off`)"
        )
    data = {"file": str(out), "club": manifest.club, "heads": manifest.heads}
    return Output(data, lines)


async def _take_backup(paths: NodePaths, passphrase: bytes | None) -> tuple[bytes, backup.Manifest]:
    async with await Node.open(paths.root, passphrase=passphrase) as node:
        return await backup.backup_bytes(node)


def add_restore_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("file", metavar="FILE", help="the backup file")
    c.add_argument("dir", metavar="DIR", help="the new node directory (must not hold anything)")
    c.add_argument("--club", help="the club id (or its prefix) the backup must be of")
    c.add_argument("--identity", metavar="FILE", help="age identity file, if sealed with --to")


def cmd_restore(args: argparse.Namespace) -> Output:
    target = Path(args.dir)
    for stale in backup.sweep_staging(NodePaths(target).absolute.parent):  # killed midway
        say(
            f"federation: removed {stale}: a restore that was interrupted left it there "
            "(a copy of a node's key envelope, TLS key and store)",
            file=sys.stderr,
        )
    if backup.held_club(target) is None:
        backup.check_target(target)  # a node there is named after decrypting, below
    backup.check_size(Path(args.file))
    sealed = _read_input(args.file)
    if not agefile.is_age(sealed):
        raise UsageError(
            f"{args.file} is not a federation backup (not an age file); use another copy"
        )
    secrets = opening_secrets(args, None)
    plain = agefile.open_sealed(sealed, args.file, **secrets)  # type: ignore[arg-type]
    manifest, files = backup.read_backup(plain, args.file)
    backup.check_club(manifest, expect=args.club, target=target)
    # The passphrase that opened the backup is the node's (one prompt), unless --to.
    passphrase = secrets.get("passphrase")
    assert passphrase is None or isinstance(passphrase, bytes)
    report = backup.restore(manifest, files, target, passphrase=passphrase, what=args.file)
    lines = [
        f"restored club “{manifest.name}” into {target}: {report.events} events in "
        f"{report.logs} logs verified",
        "its own logs are held back until a peer shows their heads: run `federation sync`; "
        "a log no other node holds (a private one) needs `federation declare-no-copies LOG`",
    ]
    data = {"club": manifest.club, "node": str(target), "heads": manifest.heads}
    return Output(data, lines)


# --- declare-no-copies -------------------------------------------------------------


def add_declare_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("logs", nargs="*", metavar="LOG", help="a log of the club's own, by name")
    c.add_argument(
        "--all",
        action="store_true",
        help="every log still held back after the restore, and logs made since",
    )


async def cmd_declare(args: argparse.Namespace) -> Output:
    if bool(args.logs) == bool(args.all):
        raise UsageError("name the logs no other node holds (LOG ...), or give --all")
    async with await Node.open(Path(args.node)) as node:
        waiting = await restored_logs(node.store)
        if not waiting:
            return Output({"confirmed": []}, ["no log is held back after a restore"])
        own = {r.name: r.id for r in await node.store.logs() if r.club == node.club}
        if args.all:
            chosen = list(waiting)
        else:
            unknown = [name for name in args.logs if name not in own]
            if unknown:
                raise UsageError(
                    f"no log {unknown[0]!r} of this club; see its logs in `federation status`"
                )
            chosen = [own[name] for name in args.logs]
            # A log made after the restore waits with every such log (store/meta.py
            # NEW_LOGS, protocol.md §3.6): naming one alone would release nothing.
            made_since = [
                n
                for n in args.logs
                if own[n] not in waiting
                and await waits_after_restore(node.store, own[n]) is not None
            ]
            if made_since:
                raise UsageError(
                    f"log {made_since[0]!r} was made after the restore: such logs wait "
                    "together for one sync with a peer (`federation sync`), or for "
                    "`federation declare-no-copies --all`; nothing was changed"
                )
        done = await confirm_restored(node.store, chosen)
    names = {log: name for name, log in own.items()}
    shown = [names.get(log, "logs made after the restore") for log in done]
    lines = [
        f"declared that no other node holds {', '.join(shown)}: "
        + ("it" if len(shown) == 1 else "they")
        + " may be written again"
        if shown
        else "nothing named was held back"
    ]
    return Output({"confirmed": [log.hex() for log in done]}, lines)


def sheet_seed() -> bytes:
    """A new recovery secret: the ed25519 seed of the recovery key (§2.1)."""
    return random_bytes(recovery.SEED_BYTES)
