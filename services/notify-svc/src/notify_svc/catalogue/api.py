"""The event catalogue over HTTP: the AsyncAPI document and a plain list of the event types, both open to anyone
(an integrator reads them before it has credentials; they describe shapes, never data)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from notify_svc.catalogue.asyncapi import asyncapi_json, example_body
from platform_common.auth import public
from platform_common.contracts.public import PUBLIC_EVENTS

router = APIRouter(tags=["webhooks"])

_PUBLIC_REASON = "the webhook event catalogue: documentation of the public events, no data"
# Short: the document changes only with a release, but a stale copy would mislead an integrator for no gain.
_CACHE_CONTROL = "public, max-age=300"


class EventType(BaseModel):
    type: str
    version: int
    summary_en: str
    summary_pl: str
    audience: str = Field(description="client, office, platform or organisation: who may receive the event.")
    link: str | None = Field(description="The API path template of the event's resource (`links.api`), if any.")
    example: dict[str, Any] = Field(description="An example webhook body of the event.")


def _server_url(request: Request) -> str | None:
    # The served document shows this deployment's URLs; getattr because a bare test app has no settings.
    settings = getattr(request.app.state, "settings", None)
    webhooks = getattr(settings, "webhooks", None)
    url = getattr(webhooks, "api_base_url", None)
    return url if isinstance(url, str) else None


@lru_cache(maxsize=8)
def _document(server_url: str | None) -> str:
    return asyncapi_json(server_url=server_url)


@lru_cache(maxsize=8)
def _event_types(server_url: str | None) -> list[EventType]:
    return [
        EventType(
            type=e.event_type,
            version=e.event_version,
            summary_en=e.summary_en,
            summary_pl=e.summary_pl,
            audience=e.audience,
            link=e.link,
            example=example_body(e, server_url=server_url),
        )
        for e in sorted(PUBLIC_EVENTS.values(), key=lambda e: e.event_type)
    ]


@router.get(
    "/webhooks/asyncapi.json",
    summary="The webhook events as an AsyncAPI 3.0 document",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
    dependencies=[Depends(public(_PUBLIC_REASON))],
)
async def asyncapi(request: Request) -> Response:
    return Response(
        _document(_server_url(request)), media_type="application/json", headers={"Cache-Control": _CACHE_CONTROL}
    )


@router.get(
    "/webhooks/event-types",
    summary="The public event types a webhook subscription can receive",
    response_model=list[EventType],
    dependencies=[Depends(public(_PUBLIC_REASON))],
)
async def event_types(request: Request, response: Response) -> list[EventType]:
    response.headers["Cache-Control"] = _CACHE_CONTROL
    return _event_types(_server_url(request))
