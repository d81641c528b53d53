"""The AsyncAPI 3.0.0 document of the webhooks: one channel, operation and message per public event, built from
``PUBLIC_EVENTS`` alone so that what is published and what is documented cannot drift apart.

Modelled from the platform's side, as AsyncAPI 3 describes an application by what it does: the platform *sends*
each event (``action: send``) to a channel whose address is the subscriber's URL, over HTTP POST.

The output is deterministic (events, schemas and messages sorted by name; pydantic's field order kept because it
reads as the contract does), so the committed ``docs/webhooks/asyncapi.json`` changes only when an event does.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from platform_common.contracts.invoices import NIP_PATTERN
from platform_common.contracts.public import PUBLIC_EVENTS, PublicEvent, public_data, public_link

ASYNCAPI_VERSION = "3.0.0"
# The catalogue's own version: each event carries its own ``event_version``, which is what a receiver checks.
CATALOGUE_VERSION = "1.0.0"
TITLE = "KSeF Hub webhooks"

# Examples only: the platform's public URL where none is given, a publicly known secret that signs the examples
# (so a receiver can try its verification on them), and the client of the examples that carry no NIP themselves.
EXAMPLE_SERVER_URL = "https://ksef-hub.example.com"
EXAMPLE_SECRET = "whsec_" + base64.b64encode(b"ksef-hub-example-secret-32-bytes").decode()
EXAMPLE_CLIENT_NIP = "5260250274"
EXAMPLE_TIMESTAMP = datetime(2026, 12, 4, 9, 30, 5, tzinfo=UTC)
_EXAMPLE_ID_NAMESPACE = uuid.UUID("6f1d3c2b-8a4e-4b7f-9c0d-1e2f3a4b5c6d")

HEADERS_SCHEMA = "WebhookHeaders"
LINKS_SCHEMA = "WebhookLinks"
URL_PARAMETER = "webhookUrl"

_AUDIENCES: Mapping[str, tuple[str, str]] = {
    "client": (
        "the client company's subscriptions and those of the offices that read the client at the time",
        "subskrypcje firmy klienta oraz biur, które w danej chwili odczytują dane klienta",
    ),
    "office": (
        "the client company's subscriptions and the office named in the event, even once it no longer reads the "
        "client (that is how it learns of a revoke)",
        "subskrypcje firmy klienta oraz biura wskazanego w zdarzeniu, także gdy już nie odczytuje danych klienta "
        "(tak dowiaduje się o odwołaniu)",
    ),
    "platform": ("every subscription", "wszystkie subskrypcje"),
    "organisation": (
        "the other subscriptions of the organisation named in the event",
        "pozostałe subskrypcje organizacji wskazanej w zdarzeniu",
    ),
}

_DESCRIPTION_EN = """\
Events the KSeF Hub platform delivers to the ERP systems of accounting offices and their clients, as HTTP POST \
requests to the URL of a webhook subscription (one channel per event type below; each channel's address is that \
URL).

Subscriptions are managed through notify-svc's API (`{server_url}/notify/webhooks/subscriptions`, permission \
`webhooks.manage`): create, list, change, delete, rotate the signing secret, send a test event, list deliveries \
and their attempts, replay.

Every request follows the [Standard Webhooks](https://www.standardwebhooks.com/) specification: the headers \
`webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of \
`{{webhook-id}}.{{webhook-timestamp}}.{{raw body}}` under the subscription's `whsec_...` secret; two signatures, \
space-separated, old and new, during a secret rotation's overlap). Verify the raw body before parsing it, and reject \
timestamps more than 5 minutes away (the `standardwebhooks` libraries do both).

Delivery is at least once: deduplicate on `webhook-id`, the same for every retry and replay of one event to one \
subscription. A 2xx answer within 15 seconds counts as delivered; anything else is retried with exponential \
backoff and jitter (5 s, 1 min, 5 min, 30 min, 2 h, 5 h, then every 10 h) up to 72 hours from the first \
attempt, after which the subscription is disabled. Deliveries of one subscription about one client are sent \
one at a time in order. Answer quickly and process asynchronously; ignore fields you do not know.

The examples are signed with the example secret `{example_secret}`. The receiver's guide: docs/webhooks/README.md.\
"""

_DESCRIPTION_PL = """\
**Po polsku.** Zdarzenia, które platforma KSeF Hub dostarcza do systemów ERP biur rachunkowych i ich klientów \
jako żądania HTTP POST na adres URL subskrypcji webhooka. Każde żądanie jest podpisane zgodnie ze specyfikacją \
Standard Webhooks (nagłówki `webhook-id`, `webhook-timestamp`, `webhook-signature`); podpis należy sprawdzić na \
surowej treści żądania przed jej parsowaniem. Dostarczanie jest „co najmniej raz”: duplikaty należy odrzucać po \
`webhook-id`. Odpowiedź 2xx w ciągu 15 sekund oznacza doręczenie; w przeciwnym razie platforma ponawia próby \
przez 72 godziny, po czym wyłącza subskrypcję. Zdarzenia jednej subskrypcji dotyczące jednego klienta są \
wysyłane pojedynczo, po kolei. Szczegóły: docs/webhooks/README.md.\
"""


def asyncapi_document(*, server_url: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document; ``server_url`` (the platform's public URL) only makes the examples' links and
    the management API's address concrete."""
    base = (server_url or EXAMPLE_SERVER_URL).rstrip("/")
    events = sorted(PUBLIC_EVENTS.values(), key=lambda e: e.event_type)
    schemas: dict[str, Any] = {HEADERS_SCHEMA: _headers_schema(), LINKS_SCHEMA: _links_schema()}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in events:
        name = event.event_type
        data_schema = _collect_schemas(event, schemas)
        messages[name] = _message(event, data_schema, base)
        channels[name] = {
            "address": "{" + URL_PARAMETER + "}",
            "title": name,
            "summary": event.summary_en,
            "messages": {name: {"$ref": f"#/components/messages/{_pointer(name)}"}},
            "parameters": {URL_PARAMETER: {"$ref": f"#/components/parameters/{URL_PARAMETER}"}},
        }
        operations[name] = {
            "action": "send",
            "title": f"Send {name}",
            "summary": event.summary_en,
            "channel": {"$ref": f"#/channels/{_pointer(name)}"},
            "messages": [{"$ref": f"#/channels/{_pointer(name)}/messages/{_pointer(name)}"}],
            "bindings": {"http": {"method": "POST", "bindingVersion": "0.3.0"}},
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": CATALOGUE_VERSION,
            "description": _DESCRIPTION_EN.format(server_url=base, example_secret=EXAMPLE_SECRET)
            + "\n\n"
            + _DESCRIPTION_PL,
            "tags": [{"name": tag} for tag in sorted({_tag(e) for e in events})],
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": messages,
            "parameters": {
                URL_PARAMETER: {
                    "description": "The URL of the webhook subscription (https outside development), as registered "
                    "with `POST /webhooks/subscriptions`.",
                    "examples": ["https://erp.example.com/ksef-hub/webhooks"],
                }
            },
        },
    }


def asyncapi_json(*, server_url: str | None = None) -> str:
    return json.dumps(asyncapi_document(server_url=server_url), indent=2, ensure_ascii=False) + "\n"


def example_body(event: PublicEvent, *, server_url: str | None = None) -> dict[str, Any]:
    """The webhook body of the event's example, built as the delivery builds it: ``public_data`` of the JSON
    payload, the client's NIP added to ``data``, the link made absolute."""
    payload = event.example.model_dump(mode="json")
    data = public_data(event.event_type, payload) or {}
    nip = data.get("client_nip")
    if not isinstance(nip, str) and event.audience in ("client", "office"):
        # Contracts without the field (a status change, a sales deadline) get the NIP from the event's envelope.
        nip = EXAMPLE_CLIENT_NIP
    body: dict[str, Any] = {
        "type": event.event_type,
        "event_version": event.event_version,
        "timestamp": EXAMPLE_TIMESTAMP.isoformat().replace("+00:00", "Z"),
        "data": data | ({"client_nip": nip} if isinstance(nip, str) else {}),
    }
    link = public_link(event.event_type, payload, nip if isinstance(nip, str) else None)
    if link is not None:
        body["links"] = {"api": (server_url or EXAMPLE_SERVER_URL).rstrip("/") + link}
    return body


def example_headers(event: PublicEvent, body: Mapping[str, Any]) -> dict[str, str]:
    msg_id = "msg_" + uuid.uuid5(_EXAMPLE_ID_NAMESPACE, event.event_type).hex
    # Signed over the compact serialisation the delivery sends, so the example verifies byte for byte.
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(EXAMPLE_TIMESTAMP.timestamp())),
        "webhook-signature": Webhook(EXAMPLE_SECRET).sign(msg_id, EXAMPLE_TIMESTAMP, raw),
    }


# The generated parts of docs/webhooks/README.md, each between ``<!-- name:start -->`` and ``<!-- name:end -->``.
def event_types_markdown() -> str:
    rows = [
        "| Event type | Version | Audience | `links.api` | Summary | Opis |",
        "|---|---|---|---|---|---|",
    ]
    for event in sorted(PUBLIC_EVENTS.values(), key=lambda e: e.event_type):
        link = f"`{event.link}`" if event.link else "—"
        cells = [f"`{event.event_type}`", str(event.event_version), event.audience, link]
        rows.append("| " + " | ".join([*cells, event.summary_en, event.summary_pl]).replace("\n", " ") + " |")
    return "\n".join(rows)


def request_example_markdown(event_type: str = "invoice.fetched") -> str:
    event = PUBLIC_EVENTS[event_type]
    body = example_body(event)
    headers = example_headers(event, body)
    lines = ["```http", "POST /ksef-hub/webhooks HTTP/1.1", "Host: erp.example.com"]
    lines += [f"{'Content-Type' if k == 'content-type' else k}: {v}" for k, v in headers.items()]
    lines += ["", json.dumps(body, indent=2, ensure_ascii=False), "```"]
    return "\n".join(lines)


README_SECTIONS = {"event-types": event_types_markdown, "request-example": request_example_markdown}


def render_readme(text: str) -> str:
    """``text`` with every generated section replaced by its current content."""
    for name, render in README_SECTIONS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        before, found, rest = text.partition(start)
        if not found or end not in rest:
            raise ValueError(f"the README has no {start} ... {end} section")
        text = before + start + "\n" + render() + "\n" + end + rest.partition(end)[2]
    return text


def _message(event: PublicEvent, data_schema: str, base: str) -> dict[str, Any]:
    audience_en, audience_pl = _AUDIENCES.get(event.audience, (event.audience, event.audience))
    description = [
        event.summary_en,
        f"**PL:** {event.summary_pl}",
        f"Sent to {audience_en}. / Odbiorcy: {audience_pl}.",
    ]
    if event.link is not None:
        description.append(f"`links.api` points at `{event.link}` (below the platform's URL): the whole resource.")
    body = example_body(event, server_url=base)
    return {
        "name": event.event_type,
        "title": _title(event),
        "summary": event.summary_en,
        "description": "\n\n".join(description),
        "contentType": "application/json",
        "tags": [{"name": _tag(event)}],
        "headers": {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
        "payload": _payload_schema(event, data_schema),
        "bindings": {"http": {"bindingVersion": "0.3.0"}},
        "examples": [{"name": event.event_type, "headers": example_headers(event, body), "payload": body}],
        "x-audience": event.audience,
    }


def _payload_schema(event: PublicEvent, data_schema: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "type": {"type": "string", "const": event.event_type, "description": "The event type."},
        "event_version": {
            "type": "integer",
            "const": event.event_version,
            "description": "The version of the event's data; a breaking change comes as a new version.",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "When the event occurred (ISO 8601, UTC); not when it was delivered.",
        },
        "data": {"$ref": f"#/components/schemas/{data_schema}"},
    }
    required = ["type", "event_version", "timestamp", "data"]
    if event.link is not None:
        properties["links"] = {"$ref": f"#/components/schemas/{LINKS_SCHEMA}"}
        required.append("links")
    properties["test"] = {
        "type": "boolean",
        "const": True,
        "description": "Present only in a test delivery (`POST /webhooks/subscriptions/{id}/test`): example data.",
    }
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def _collect_schemas(event: PublicEvent, schemas: dict[str, Any]) -> str:
    """Adds the event's data schema and its pydantic ``$defs`` to ``schemas`` (the document's
    ``components/schemas``, where AsyncAPI resolves references); returns the data schema's name."""
    schema = copy.deepcopy(event.json_schema())
    defs: dict[str, Any] = schema.pop("$defs", {})
    schema.setdefault("description", event.summary_en)
    properties = schema.setdefault("properties", {})
    if "client_nip" not in properties and event.audience in ("client", "office"):
        properties["client_nip"] = {
            "type": "string",
            "pattern": NIP_PATTERN,
            "title": "Client Nip",
            "description": "The NIP of the client the event is about (from the event's context).",
        }
    name = event.contract.__name__
    for def_name, definition in [*defs.items(), (name, schema)]:
        rewritten = _rewrite_refs(definition)
        existing = schemas.get(def_name)
        if existing is not None and existing != rewritten:
            # Two contracts' models of one name but different shapes: one reference could not mean both.
            raise ValueError(f"schema name {def_name!r} is used by two different schemas ({event.event_type})")
        schemas[def_name] = rewritten
    return name


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: ("#/components/schemas/" + v.removeprefix("#/$defs/"))
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/")
            else _rewrite_refs(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _headers_schema() -> dict[str, Any]:
    signature = r"v1,[A-Za-z0-9+/]+={0,2}"
    return {
        "type": "object",
        "description": "The Standard Webhooks headers of every delivery attempt.",
        "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
        "properties": {
            "content-type": {"type": "string", "const": "application/json"},
            "webhook-id": {
                "type": "string",
                "minLength": 1,
                "description": "The message id: the same for every retry and replay of one event to one "
                "subscription. Deduplicate on it.",
            },
            "webhook-timestamp": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Unix seconds of this attempt; reject values more than 5 minutes away from now.",
            },
            "webhook-signature": {
                "type": "string",
                "pattern": f"^{signature}( {signature})*$",
                "description": "`v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{raw body}`; during "
                "a secret rotation's overlap two, space-separated (the old secret's and the new one's).",
            },
        },
    }


def _links_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["api"],
        "properties": {
            "api": {
                "type": "string",
                "format": "uri",
                "description": "Absolute URL of the event's resource in the platform's API (read it with the "
                "organisation's API credentials).",
            }
        },
        "additionalProperties": False,
    }


def _title(event: PublicEvent) -> str:
    words = re.findall(r"[A-Z][a-z0-9]*", event.contract.__name__)
    title = " ".join([words[0], *(w.lower() for w in words[1:])]) if words else event.event_type
    return title.replace("Ksef", "KSeF")


def _tag(event: PublicEvent) -> str:
    return event.event_type.split(".", 1)[0]


def _pointer(name: str) -> str:
    """A key as one JSON Pointer segment (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


__all__ = [
    "EXAMPLE_SECRET",
    "asyncapi_document",
    "asyncapi_json",
    "event_types_markdown",
    "example_body",
    "example_headers",
    "render_readme",
    "request_example_markdown",
]
