"""`federation proposal verify FILE`: offline, exit 0 and who agreed to what, or a
non-zero exit and one line naming what is wrong (protocol.md §3.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.cli.main import main
from tests.views.test_proposals import _agreed

pytestmark = pytest.mark.timeout(30)


def test_verify_prints_who_agreed_and_refuses_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = _agreed()
    good = tmp_path / "agreement.json"
    good.write_bytes(data)
    assert main(["proposal", "verify", str(good)]) == 0
    out = capsys.readouterr().out
    assert "agreement verified: Rent strike bloc" in out
    assert "8 people" in out
    assert "a stall" in out

    for name, bad in [
        ("truncated.json", data[:-40]),
        ("rule.json", data.replace(b'"rule":"all"', b'"rule":"at_least:1"')),
        ("bitflip.json", data[:300] + bytes([data[300] ^ 1]) + data[301:]),
    ]:
        path = tmp_path / name
        path.write_bytes(bad)
        assert main(["proposal", "verify", str(path)]) != 0
        err = capsys.readouterr().err
        assert err.startswith("federation: error: ")
        assert err.count("\n") == 1
