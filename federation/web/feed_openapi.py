"""The feed's OpenAPI 3.1 document, built from msgspec's JSON Schema of the response
types, so the document cannot drift from what the handlers encode."""

from __future__ import annotations

from typing import Any

import msgspec

from federation.core.evidence import Evidence
from federation.views.feed import MAX_PAGE_ITEMS, PAGE_ITEMS, FeedPage

_REF = "#/components/schemas/{name}"


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_CLUB = _query("club", "Only this club (its id).", {"type": "string", "pattern": "^[0-9a-f]{64}$"})
_FILTERS = [
    _CLUB,
    _query(
        "kind",
        "Only this kind of event.",
        {"type": "string", "enum": ["note", "action", "report", "campaign", "roster", "erasure"]},
    ),
    _query(
        "campaign",
        "Only the steps of campaigns with this slug, or of the joint campaign with this "
        "proposal id (its steps by every club that shows it).",
        {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
    ),
]
_PAGING = [
    _query(
        "before",
        "A cursor (`next` of the previous page, or an item's `cursor`): older items only.",
        {"type": "string"},
    ),
    _query(
        "limit",
        f"Items per page (default {PAGE_ITEMS}).",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_ITEMS},
    ),
]
_BAD = {"description": "A query parameter is malformed.", "content": {"text/plain": {}}}
_BUSY = {"description": "Too many requests from this address; try again later."}


def _get(summary: str, content: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": content},
                "400": _BAD,
                "429": _BUSY,
            },
        }
    }


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}


def openapi(title: str) -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components([FeedPage, Evidence], ref_template=_REF)
    html = {"text/html": {"schema": {"type": "string"}}}
    club_path = {
        "name": "club",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }
    event_path = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }
    paths = {
        "/": _get("The feed as a web page.", html, _FILTERS + _PAGING),
        "/clubs/{club}": _get("One club's page.", html, [club_path, *_FILTERS[1:], *_PAGING]),
        "/feed.json": _get("The feed, newest first.", _json("FeedPage"), _FILTERS + _PAGING),
        "/feed.atom": _get(
            "The feed as Atom 1.0.", {"application/atom+xml": {}}, _FILTERS + _PAGING
        ),
        "/calendar.ics": _get("Upcoming actions as iCalendar.", {"text/calendar": {}}, [_CLUB]),
        "/live": _get(
            "New items as server-sent events (event `item`, data a FeedItem, id its event"
            " id; send Last-Event-ID to resume).",
            {"text/event-stream": {}},
            _FILTERS,
        ),
        "/events/{id}": _get(
            "A public event with what verifies it offline (`federation verify-event`).",
            _json("Evidence"),
            [event_path],
        ),
        "/openapi.json": _get("This document.", {"application/json": {}}, []),
    }
    paths["/events/{id}"]["get"]["responses"]["404"] = {"description": "No such public event."}
    paths["/clubs/{club}"]["get"]["responses"]["404"] = {"description": "No such club here."}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "1",
            "description": "The read-only federation feed: only public logs, GET and HEAD only.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
