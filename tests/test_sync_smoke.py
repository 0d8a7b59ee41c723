"""A first end-to-end check of sync: three real nodes, TLS, a relay."""

from __future__ import annotations

from pathlib import Path

from federation.core.canonical import Kind
from tests.harness import Federation


async def test_relay_follows_the_origin_audience(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c"]) as fed:
        await fed.federate("a", "b")
        await fed.federate("b", "c")
        secret = await fed["a"].post(Kind.NOTE, {"text": "a private plan"}, "private")
        shared = await fed["a"].post(Kind.NOTE, {"text": "for a's federation"}, "federation")
        public = await fed["a"].post(Kind.NOTE, {"text": "for everyone"}, "public")

        async def c_has_public() -> bool:
            return public.payload in await fed["c"].payloads()

        async def b_has_shared() -> bool:
            return shared.payload in await fed["b"].payloads()

        await fed.wait_for(b_has_shared, what="b to receive a's federation note")
        await fed.wait_for(c_has_public, what="c to receive a's public note through b")
        assert shared.payload not in await fed["c"].payloads()  # c is not in a's roster
        assert public.payload is not None
        assert any(public.payload in body for body in fed["c"].received)  # recording works
        for name in ("b", "c"):
            assert secret.payload not in await fed[name].payloads()
            assert secret.payload is not None
            assert not any(secret.payload in body for body in fed[name].received)
