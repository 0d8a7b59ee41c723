"""Delivery for `status` and `show`: data for --json, and `show`'s line for people
(`status` draws its own lines from the same records: cli/listing.py `delivery_lines`).

What "held by" means, and how sure it is, is node/delivery.py's docstring: a peer's
own frontier showed it holds our event (its word, unsigned), not merely that we sent
it. Peer names are other clubs' text: these lines reach a terminal only through
`Output` (cli/output.py makes them safe).
"""

from __future__ import annotations

from typing import Any

from federation.node.delivery import EventDelivery, PeerDelivery


def delivery_json(found: list[PeerDelivery]) -> list[dict[str, Any]]:
    """Per peer: whether it accepts our requests, and per log of ours it may receive,
    our head and the seq its frontier showed it holds."""
    return [
        {
            "club": p.club.hex(),
            "name": p.name,
            "state": p.state,
            "last_contact_us": p.last_contact_us,
            "accepts_us": p.refused is None,
            "refused_since_us": p.refused.since_us if p.refused else None,
            "refused": p.refused.why if p.refused else None,
            "delivered": p.delivered,
            "logs": [
                {
                    "log": e.log.hex(),
                    "name": e.name,
                    "audience": e.audience,
                    "head_seq": e.head_seq,
                    "held_seq": e.held_seq,
                    "held_since_us": e.held_since_us,
                    "delivered": e.delivered,
                }
                for e in p.logs
            ],
        }
        for p in found
    ]


def event_delivery_json(found: EventDelivery | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "leaves_node": found.leaves_node,
        "held_by": [c.hex() for c in found.held_by],
        "not_yet": [c.hex() for c in found.not_yet],
    }


def event_delivery_lines(found: EventDelivery | None, names: dict[bytes, str]) -> list[str]:
    if found is None:
        return []
    if not found.leaves_node:
        return ["delivery      private: it never leaves this node"]

    def named(clubs: list[bytes]) -> str:
        return ", ".join(names.get(c) or c.hex()[:12] for c in clubs)

    parts = []
    if found.held_by:
        parts.append(f"held by {named(found.held_by)}")
    if found.not_yet:
        parts.append(f"not yet shown held by {named(found.not_yet)}")
    return ["delivery      " + ("; ".join(parts) or "no peer may receive it")]
