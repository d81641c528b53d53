"""The webhook catalogue: a valid AsyncAPI 3.0.0 document describing exactly what is published, committed up to
date, with a receiver's guide whose verification recipe works; served openly by notify-svc."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notify_svc.catalogue import asyncapi as catalogue
from notify_svc.catalogue.api import router
from notify_svc.main import DEFINITION
from notify_svc.settings import NotifySettings, WebhookSettings
from platform_common.app import create_service_app
from platform_common.contracts.public import PUBLIC_EVENTS
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import assert_every_route_has_a_rule

HERE = Path(__file__).parent
DOCS = Path(__file__).resolve().parents[5] / "docs" / "webhooks"
ASYNCAPI_SCHEMA = HERE / "asyncapi-3.0.0.schema.json"
REGENERATE = "run `python3 -m uv run --frozen python -m notify_svc.catalogue` and commit the result"

# Never published, in no event: secrets, people's e-mail addresses, bulky lists and internal references.
NEVER_PUBLISHED = frozenset(
    {"sealed_link", "sealed_code", "client_email", "return_email", "recipients", "documents", "xml_ref"}
)

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 random bytes, only for these tests


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return catalogue.asyncapi_document()


def _message(document: dict[str, Any], event_type: str) -> dict[str, Any]:
    message: dict[str, Any] = document["components"]["messages"][event_type]
    return message


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    # The message's schemas refer into ``#/components/schemas``: give the validator that part of the document at
    # the same place, so the references resolve exactly as an AsyncAPI tool resolves them.
    return jsonschema_rs.Draft7Validator({**schema, "components": document["components"]}, validate_formats=True)


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class TestCommittedFiles:
    def test_the_committed_document_is_current(self) -> None:
        committed = (DOCS / "asyncapi.json").read_text(encoding="utf-8")

        assert committed == catalogue.asyncapi_json(), f"docs/webhooks/asyncapi.json is stale: {REGENERATE}"

    def test_the_generated_sections_of_the_readme_are_current(self) -> None:
        readme = (DOCS / "README.md").read_text(encoding="utf-8")

        assert readme == catalogue.render_readme(readme), f"docs/webhooks/README.md is stale: {REGENERATE}"

    def test_the_output_is_deterministic(self) -> None:
        assert catalogue.asyncapi_json() == catalogue.asyncapi_json()

    def test_the_generator_writes_both_files(self, tmp_path: Path) -> None:
        from notify_svc.catalogue.__main__ import main

        (tmp_path / "README.md").write_text(
            "# x\n<!-- request-example:start -->\n<!-- request-example:end -->\n"
            "<!-- event-types:start -->\nold\n<!-- event-types:end -->\ntail\n",
            encoding="utf-8",
        )

        main(tmp_path)

        assert (tmp_path / "asyncapi.json").read_text(encoding="utf-8") == catalogue.asyncapi_json()
        readme = (tmp_path / "README.md").read_text(encoding="utf-8")
        assert "old" not in readme and "| `invoice.fetched` | 1 |" in readme and readme.endswith("tail\n")


class TestAsyncApiStructure:
    def test_the_document_is_valid_against_the_asyncapi_3_schema(self, document: dict[str, Any]) -> None:
        validator = jsonschema_rs.validator_for(json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8")))

        errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message[:300]}" for e in validator.iter_errors(document)]

        assert errors == []

    def test_the_schema_check_is_not_vacuous(self, document: dict[str, Any]) -> None:
        validator = jsonschema_rs.validator_for(json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8")))
        broken = json.loads(json.dumps(document))
        broken["operations"]["invoice.fetched"]["action"] = "publish"  # AsyncAPI 2's verb, gone in 3

        assert not validator.is_valid(broken)

    def test_every_reference_resolves_inside_the_document(self, document: dict[str, Any]) -> None:
        refs = [(path, node["$ref"]) for path, node in _walk(document) if isinstance(node, dict) and "$ref" in node]

        assert refs
        for path, ref in refs:
            assert ref.startswith("#/"), f"{path}: {ref} is not local"
            _resolve(document, ref)  # KeyError names the broken one
        assert not [p for p, node in _walk(document) if isinstance(node, dict) and "$defs" in node]

    def test_the_platform_sends_every_public_event_over_http_post(self, document: dict[str, Any]) -> None:
        assert document["asyncapi"] == "3.0.0"
        assert document["info"]["title"] == "KSeF Hub webhooks"
        assert "Po polsku" in document["info"]["description"]
        assert set(document["channels"]) == set(PUBLIC_EVENTS)
        assert set(document["operations"]) == set(PUBLIC_EVENTS)
        for event_type, channel in document["channels"].items():
            assert channel["address"] == "{webhookUrl}"
            assert set(channel["parameters"]) == {"webhookUrl"}
            operation = document["operations"][event_type]
            assert operation["action"] == "send"
            assert _resolve(document, operation["channel"]["$ref"]) is channel
            assert operation["bindings"]["http"]["method"] == "POST"
            [message_ref] = operation["messages"]
            assert _resolve(document, _resolve(document, message_ref["$ref"])["$ref"]) is _message(document, event_type)


class TestMessages:
    @pytest.mark.parametrize("event_type", sorted(PUBLIC_EVENTS))
    def test_each_event_has_a_described_message(self, document: dict[str, Any], event_type: str) -> None:
        event = PUBLIC_EVENTS[event_type]
        message = _message(document, event_type)

        assert message["name"] == event_type
        assert message["title"]
        assert message["summary"] == event.summary_en
        assert event.summary_pl in message["description"]
        assert message["contentType"] == "application/json"
        payload = message["payload"]
        assert payload["properties"]["type"]["const"] == event_type
        assert payload["properties"]["event_version"]["const"] == event.event_version
        assert ("links" in payload["required"]) == (event.link is not None)
        data = _resolve(document, payload["properties"]["data"]["$ref"])
        published = set(event.json_schema()["properties"])
        assert set(data["properties"]) - {"client_nip"} == published - {"client_nip"}

    @pytest.mark.parametrize("event_type", sorted(PUBLIC_EVENTS))
    def test_the_example_validates_against_the_message(self, document: dict[str, Any], event_type: str) -> None:
        message = _message(document, event_type)
        [example] = message["examples"]
        payload_validator = _validator(document, message["payload"])
        headers_validator = _validator(document, message["headers"])

        assert [e.message for e in payload_validator.iter_errors(example["payload"])] == []
        assert [e.message for e in headers_validator.iter_errors(example["headers"])] == []
        assert example["payload"]["data"] == _expected_data(event_type)

    @pytest.mark.parametrize("event_type", sorted(PUBLIC_EVENTS))
    def test_the_example_signature_verifies(self, document: dict[str, Any], event_type: str) -> None:
        [example] = _message(document, event_type)["examples"]
        headers, body = example["headers"], example["payload"]
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)

        with mock.patch("standardwebhooks.webhooks.datetime") as clock:  # the example's moment, not today
            clock.now.return_value = at
            clock.fromtimestamp.side_effect = datetime.fromtimestamp
            assert Webhook(catalogue.EXAMPLE_SECRET).verify(raw, headers) == body

    def test_the_schemas_refuse_what_is_not_published(self, document: dict[str, Any]) -> None:
        message = _message(document, "integration.consented")
        [example] = message["examples"]
        leaked = json.loads(json.dumps(example["payload"]))
        leaked["data"]["sealed_code"] = "hpke1.example"

        assert not _validator(document, message["payload"]).is_valid(leaked)

    def test_a_platform_event_has_no_client(self, document: dict[str, Any]) -> None:
        message = _message(document, "ksef.outage.started")
        [example] = message["examples"]
        with_client = json.loads(json.dumps(example["payload"]))
        with_client["data"]["client_nip"] = "5260250274"

        assert "client_nip" not in example["payload"]["data"]
        assert not _validator(document, message["payload"]).is_valid(with_client)

    def test_a_test_delivery_validates(self, document: dict[str, Any]) -> None:
        message = _message(document, "invoice.fetched")
        [example] = message["examples"]

        assert _validator(document, message["payload"]).is_valid({**example["payload"], "test": True})

    def test_served_with_a_deployments_url_the_links_point_there(self) -> None:
        document = catalogue.asyncapi_document(server_url="https://hub.biuro.example.pl/")
        [example] = _message(document, "invoice.fetched")["examples"]

        assert example["payload"]["links"]["api"].startswith("https://hub.biuro.example.pl/gateway/clients/5260250274/")
        assert "https://hub.biuro.example.pl/notify/webhooks/subscriptions" in document["info"]["description"]


def _expected_data(event_type: str) -> dict[str, Any]:
    from platform_common.contracts.public import public_data

    event = PUBLIC_EVENTS[event_type]
    data = public_data(event_type, event.example.model_dump(mode="json")) or {}
    if event.audience in ("client", "office"):
        data.setdefault("client_nip", catalogue.EXAMPLE_CLIENT_NIP)
    return data


class TestNothingPrivateIsPublished:
    def test_no_schema_or_example_names_a_private_field(self, document: dict[str, Any]) -> None:
        found = [
            f"{path}/{key}"
            for path, node in _walk(document)
            if isinstance(node, dict)
            for key in node
            if key in NEVER_PUBLISHED
        ]
        required = [
            path
            for path, node in _walk(document)
            if path.endswith("/required") and isinstance(node, list) and NEVER_PUBLISHED & set(node)
        ]

        assert found == [] and required == []

    def test_no_model_of_an_omitted_field_is_described(self, document: dict[str, Any]) -> None:
        # month.* omit ``recipients`` and ``documents``: their models (with people's e-mail addresses) must go too.
        assert {"Recipient", "ApprovedDocument"}.isdisjoint(document["components"]["schemas"])

    def test_the_event_list_shows_no_private_field(self) -> None:
        for event in PUBLIC_EVENTS.values():
            body = catalogue.example_body(event)
            assert NEVER_PUBLISHED.isdisjoint(key for _, node in _walk(body) if isinstance(node, dict) for key in node)


def _python_blocks() -> list[str]:
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", readme, flags=re.DOTALL | re.MULTILINE)


def _signed(secret: str, body: bytes, *, at: datetime | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
    }


class TestReadmeRecipe:
    @pytest.fixture
    def recipe(self) -> dict[str, Any]:
        blocks = _python_blocks()
        assert blocks, "docs/webhooks/README.md has no python block"
        namespace: dict[str, Any] = {}
        exec(compile(blocks[0], "README.md (python)", "exec"), namespace)  # noqa: S102 - our own documentation
        return namespace

    def test_a_signed_body_verifies(self, recipe: dict[str, Any]) -> None:
        body = json.dumps(catalogue.example_body(PUBLIC_EVENTS["invoice.fetched"]), ensure_ascii=False).encode()

        assert recipe["verify"](SECRET, body, _signed(SECRET, body)) == json.loads(body)

    def test_a_changed_body_is_refused(self, recipe: dict[str, Any]) -> None:
        body = b'{"type":"month.approved","data":{"period":"2026-11"}}'
        headers = _signed(SECRET, body)

        with pytest.raises(WebhookVerificationError):
            recipe["verify"](SECRET, body.replace(b"11", b"10"), headers)

    def test_another_secret_is_refused(self, recipe: dict[str, Any]) -> None:
        body = b'{"type":"month.approved"}'

        with pytest.raises(WebhookVerificationError):
            recipe["verify"](catalogue.EXAMPLE_SECRET, body, _signed(SECRET, body))

    def test_an_old_timestamp_is_refused(self, recipe: dict[str, Any]) -> None:
        body = b'{"type":"month.approved"}'
        headers = _signed(SECRET, body, at=datetime.now(UTC) - timedelta(minutes=6))

        with pytest.raises(WebhookVerificationError):
            recipe["verify"](SECRET, body, headers)

    def test_during_a_rotation_either_secret_verifies(self, recipe: dict[str, Any]) -> None:
        body = b'{"type":"month.approved"}'
        at = datetime.now(UTC)
        old, new = _signed(catalogue.EXAMPLE_SECRET, body, at=at), _signed(SECRET, body, at=at)
        headers = {**new, "webhook-signature": f"{old['webhook-signature']} {new['webhook-signature']}"}

        assert recipe["verify"](SECRET, body, headers) == {"type": "month.approved"}
        assert recipe["verify"](catalogue.EXAMPLE_SECRET, body, headers) == {"type": "month.approved"}

    async def test_the_fastapi_receiver_answers_and_deduplicates(self) -> None:
        first, receiver = _python_blocks()[:2]
        namespace: dict[str, Any] = {}
        with mock.patch.dict(os.environ, {"KSEF_HUB_WEBHOOK_SECRET": SECRET}):
            exec(compile(first + "\n" + receiver, "README.md (python)", "exec"), namespace)  # noqa: S102
        body = b'{"type":"invoice.fetched","data":{}}'

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=namespace["app"]), base_url="http://erp") as c:
            good = await c.post("/ksef-hub/webhooks", content=body, headers=_signed(SECRET, body, msg_id="msg_7"))
            again = await c.post("/ksef-hub/webhooks", content=body, headers=_signed(SECRET, body, msg_id="msg_7"))
            bad = await c.post("/ksef-hub/webhooks", content=body + b" ", headers=_signed(SECRET, body))

        assert (good.status_code, again.status_code, bad.status_code) == (204, 204, 400)
        assert namespace["processed"] == {"msg_7"}


class TestRoutes:
    @staticmethod
    def _bare_app() -> FastAPI:
        app = FastAPI()
        app.include_router(router)
        return app

    @staticmethod
    def _service_app(tmp_path: Path, api_base_url: str) -> FastAPI:
        # notify-svc as it runs, with the catalogue's router (main.py adds it to the definition; until it does,
        # the test adds it here).
        routers = DEFINITION.routers if router in DEFINITION.routers else (*DEFINITION.routers, router)
        settings = NotifySettings(
            db=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"),
            messaging=MessagingSettings(transport="inprocess"),
            webhooks=WebhookSettings(api_base_url=api_base_url),
        )
        return create_service_app(dataclasses.replace(DEFINITION, routers=routers), settings)

    async def test_both_endpoints_answer_without_credentials(self) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self._bare_app()), base_url="http://n") as c:
            document = await c.get("/webhooks/asyncapi.json")
            types = await c.get("/webhooks/event-types")

        assert document.status_code == 200 and types.status_code == 200
        assert document.headers["content-type"].startswith("application/json")
        assert document.text == catalogue.asyncapi_json()
        listed = types.json()
        assert [t["type"] for t in listed] == sorted(PUBLIC_EVENTS)
        fetched = next(t for t in listed if t["type"] == "invoice.fetched")
        event = PUBLIC_EVENTS["invoice.fetched"]
        assert fetched == {
            "type": "invoice.fetched",
            "version": event.event_version,
            "summary_en": event.summary_en,
            "summary_pl": event.summary_pl,
            "audience": "client",
            "link": event.link,
            "example": catalogue.example_body(event),
        }

    async def test_the_service_serves_them_openly_with_its_own_url(self, tmp_path: Path) -> None:
        app = self._service_app(tmp_path, "https://hub.biuro.example.pl")
        assert_every_route_has_a_rule(app)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as c:
            document = await c.get("/webhooks/asyncapi.json")
            types = await c.get("/webhooks/event-types")

        assert document.status_code == 200, document.text
        assert types.status_code == 200, types.text
        assert document.json() == catalogue.asyncapi_document(server_url="https://hub.biuro.example.pl")
        fetched = next(t for t in types.json() if t["type"] == "invoice.fetched")
        assert fetched["example"]["links"]["api"].startswith("https://hub.biuro.example.pl/gateway/")
