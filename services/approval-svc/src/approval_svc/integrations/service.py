"""Use cases of office-client integrations. Each owns its transaction and writes its event to the outbox in it,
so a change and its announcement commit together (nothing is told that did not happen, nothing happens untold).

Who may do what:
- the office (a member with ``clients.manage``) requests, renews, activates with the code, suspends, resumes and
  revokes;
- the client consents or refuses through the one-time link mailed to the address the office named; a signed-in
  user following it must belong to the client company (never to the office itself);
- the client's owner (``users.manage`` in the client company: who may act for it) suspends, resumes and revokes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row

from approval_svc.integrations.domain import (
    ActivationCode,
    CodeCheck,
    ConsentLink,
    IntegrationError,
    IntegrationState,
    Side,
    Transition,
    check_transition,
    expires,
)
from approval_svc.integrations.repository import IntegrationRepository
from approval_svc.settings import IntegrationSettings
from platform_common.auth.clock import Clock, system_clock
from platform_common.auth.principal import Principal
from platform_common.contracts.integrations import (
    CredentialAccessChange,
    CredentialAccessLost,
    IntegrationActivated,
    IntegrationChange,
    IntegrationConsented,
    IntegrationConsentRequested,
    IntegrationExpired,
    IntegrationRefused,
    IntegrationResumed,
    IntegrationRevoked,
    IntegrationSuspended,
)
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox
from platform_common.nip import InvalidNip, normalize_nip

log = logging.getLogger(__name__)

Language = Literal["pl", "en"]
CLIENTS_MANAGE = "clients.manage"
CLIENT_OWNER_PERMISSION = "users.manage"


@dataclass(frozen=True)
class Office:
    id: uuid.UUID
    name: str
    nip: str


@dataclass(frozen=True)
class ConsentRequest:
    client_nip: str
    client_email: str
    return_email: str
    client_name: str | None = None
    send_sales: bool = False
    client_language: Language = "pl"
    return_language: Language = "pl"


@dataclass(frozen=True)
class ConsentDecision:
    agree: bool
    access_mode: Literal["grant", "token"] | None = None


_EVENTS: dict[Transition, type[IntegrationChange]] = {
    Transition.REFUSE: IntegrationRefused,
    Transition.ACTIVATE: IntegrationActivated,
    Transition.SUSPEND: IntegrationSuspended,
    Transition.RESUME: IntegrationResumed,
    Transition.REVOKE: IntegrationRevoked,
    Transition.EXPIRE: IntegrationExpired,
}


class Integrations:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        settings: IntegrationSettings,
        *,
        public_url: str,
        notify_public_key: str | None,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._settings = settings
        self._public_url = public_url
        self._notify_key = notify_public_key
        self.clock = clock

    # --- office side ---------------------------------------------------------------------------------------------

    async def request(self, actor: Principal, office: Office, body: ConsentRequest) -> dict[str, Any]:
        """Ask the client for consent (or ask again: a refused, expired or revoked integration is renewed)."""
        self._office_member(actor, office.id)
        try:
            client_nip = normalize_nip(body.client_nip)
        except InvalidNip as exc:
            raise IntegrationError("invalid-nip", f"The client's NIP is not valid: {exc}.", status=422) from None
        if client_nip == office.nip:
            raise IntegrationError("own-nip", "An office cannot be its own client.", status=422)
        key = self._sealing_key()
        async with self._db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            now = self.clock()
            existing = await repo.of_pair(office.id, client_nip, lock=True)
            values = {
                "office_name": office.name,
                "office_nip": office.nip,
                "client_name": body.client_name,
                "client_email": body.client_email,
                "client_language": body.client_language,
                "return_email": body.return_email,
                "return_language": body.return_language,
                "send_sales": body.send_sales,
                "requested_at": now,
                "requested_by": actor.id,
            }
            if existing is None:
                integration_id, revision = uuid.uuid4(), 1
                await repo.add(
                    {"id": integration_id, "office_id": office.id, "client_nip": client_nip, "code_attempts": 0}
                    | values
                    | self._fresh_request(now, revision)
                )
            else:
                check_transition(IntegrationState(existing.state), Transition.RENEW, side=Side.OFFICE)
                integration_id, revision = existing.id, existing.revision + 1
                await repo.change(integration_id, values | self._fresh_request(now, revision))
            link = ConsentLink.new()
            await repo.change(integration_id, {"consent_token_hash": link.digest})
            row = await repo.get(integration_id)
            assert row is not None
            url = f"{self._public_url}/consent?token={link.token}"
            await self._emit(
                session,
                IntegrationConsentRequested(
                    **self._common(row, Side.OFFICE, actor.id),
                    sealed_link=IntegrationConsentRequested.seal_link(key, url),
                    expires_at=row.consent_expires_at,
                    language=row.client_language,
                    client_email=row.client_email,
                    return_email=row.return_email,
                    client_name=row.client_name,
                ),
            )
            log.info("integration %s: consent requested (revision %d)", integration_id, revision)
            return self._view(row)

    async def record_established(
        self, office: Office, client_nip: str, client_name: str, client_email: str, *, by: str
    ) -> bool:
        """An integration the office and the client agreed before this platform knew them (the demo's active
        client): recorded active at once, with one ``integration.activated`` so that every service's projection
        opens it. It skips consent by design, so no API reaches it; only in-process set-up calls it. False when the
        pair has an integration already."""
        async with self._db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            if await repo.of_pair(office.id, client_nip, lock=True) is not None:
                return False
            now = self.clock()
            integration_id = uuid.uuid4()
            await repo.add(
                self._fresh_request(now, 1)
                | {
                    "id": integration_id,
                    "office_id": office.id,
                    "office_name": office.name,
                    "office_nip": office.nip,
                    "client_nip": client_nip,
                    "client_name": client_name,
                    "client_email": client_email,
                    "client_language": "pl",
                    "return_email": client_email,
                    "return_language": "pl",
                    "send_sales": True,
                    "state": IntegrationState.ACTIVE.value,
                    "access_mode": "token",
                    "requested_at": now,
                    "requested_by": by,
                    "consented_at": now,
                    "consented_by": client_email,
                    "activated_at": now,
                    "activated_by": by,
                    "consent_expires_at": None,
                }
            )
            row = await repo.get(integration_id)
            assert row is not None
            await self._emit(session, IntegrationActivated(**self._common(row, Side.OFFICE, by)))
            log.info("integration %s: recorded as established (active)", integration_id)
            return True

    async def renew(self, actor: Principal, integration_id: uuid.UUID) -> dict[str, Any]:
        async with self._db.sessionmaker() as session, session.begin():
            row = await self._office_row(IntegrationRepository(session), actor, integration_id)
            body = ConsentRequest(
                client_nip=row.client_nip,
                client_email=row.client_email,
                return_email=row.return_email,
                client_name=row.client_name,
                send_sales=row.send_sales,
                client_language=row.client_language,
                return_language=row.return_language,
            )
            office = Office(row.office_id, row.office_name, row.office_nip)
        return await self.request(actor, office, body)

    async def list_for(self, actor: Principal, office_id: uuid.UUID) -> list[dict[str, Any]]:
        self._office_member(actor, office_id, permission=None)
        async with self._db.sessionmaker() as session:
            return [self._view(r) for r in await IntegrationRepository(session).of_office(office_id)]

    async def list_of_client(self, actor: Principal) -> list[dict[str, Any]]:
        """The offices a client company works with (a client user's own view)."""
        nip = self._client_nip_of(actor)
        async with self._db.sessionmaker() as session:
            return [self._view(r) for r in await IntegrationRepository(session).of_client(nip)]

    async def get(self, actor: Principal, integration_id: uuid.UUID) -> dict[str, Any]:
        async with self._db.sessionmaker() as session:
            row = await IntegrationRepository(session).get(integration_id)
            if row is None or not self._may_see(actor, row):
                raise IntegrationError("not-found", "The integration does not exist.", status=404)
            return self._view(row)

    async def activate(self, actor: Principal, integration_id: uuid.UUID, entered: str) -> dict[str, Any]:
        """The office enters the activation code. Wrong codes count (and lock); an expired code expires the
        integration. Those outcomes are committed before the refusal is raised."""
        refusal: IntegrationError | None = None
        async with self._db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            row = await self._office_row(repo, actor, integration_id, lock=True)
            state = IntegrationState(row.state)
            if state is not IntegrationState.CONSENTED:
                check_transition(state, Transition.ACTIVATE, side=Side.OFFICE)
            now = self.clock()
            check = CodeCheck(row.code_expires_at, row.code_attempts, self._settings.max_code_attempts)
            refusal = check.refusal(now)
            if refusal is not None and refusal.code == "code-expired":
                row = await self._transition(repo, row, Transition.EXPIRE, Side.PLATFORM, None, {"code_hash": None})
            elif refusal is None and not ActivationCode.matches(entered, row.code_salt, row.code_hash):
                attempts = row.code_attempts + 1
                await repo.change(integration_id, {"code_attempts": attempts, "updated_at": now})
                left = self._settings.max_code_attempts - attempts
                refusal = (
                    IntegrationError("wrong-code", f"The activation code is wrong; {left} attempt(s) left.", status=422)
                    if left > 0
                    else IntegrationError(
                        "code-locked", "That was the last attempt: the code is locked; renew the request.", status=423
                    )
                )
                log.info(
                    "integration %s: wrong activation code (%d of %d)",
                    integration_id,
                    attempts,
                    self._settings.max_code_attempts,
                )
            elif refusal is None:
                row = await self._transition(
                    repo,
                    row,
                    Transition.ACTIVATE,
                    Side.OFFICE,
                    actor.id,
                    {"activated_at": now, "activated_by": actor.id, "code_hash": None, "code_salt": None},
                )
                return self._view(row)
        assert refusal is not None
        raise refusal

    async def change_state(self, actor: Principal, integration_id: uuid.UUID, transition: Transition) -> dict[str, Any]:
        """Suspend, resume or revoke, by either side."""
        if transition not in (Transition.SUSPEND, Transition.RESUME, Transition.REVOKE):
            raise ValueError(transition)
        async with self._db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            row = await repo.get(integration_id, lock=True)
            if row is None or not self._may_see(actor, row):
                raise IntegrationError("not-found", "The integration does not exist.", status=404)
            side = self._acting_side(actor, row)
            now = self.clock()
            extra: dict[str, Any] = {}
            if transition is Transition.SUSPEND:
                extra = {"suspended_by_side": side.value}
            elif transition is Transition.RESUME:
                extra = {"suspended_by_side": None}
            else:
                extra = {"ended_at": now, "ended_by": actor.id, "code_hash": None, "suspended_by_side": None}
            row = await self._transition(repo, row, transition, side, actor.id, extra)
            return self._view(row)

    # --- client side (the consent page) ---------------------------------------------------------------------------

    async def consent_page(self, token: str, visitor: Principal | None) -> dict[str, Any]:
        """What the consent page shows; an ``IntegrationError`` when the link cannot be used (nothing changes)."""
        async with self._db.sessionmaker() as session:
            row = await self._usable_link(IntegrationRepository(session), token, visitor)
            return self._view(row)

    async def decide(self, token: str, visitor: Principal | None, decision: ConsentDecision) -> dict[str, Any]:
        """Agree (an activation code goes to the office's return address) or refuse (the office is told)."""
        async with self._db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            row = await self._usable_link(repo, token, visitor, lock=True)
            return await self._decide(session, repo, row, visitor, decision)

    async def decide_signed_in(
        self, actor: Principal, integration_id: uuid.UUID, decision: ConsentDecision
    ) -> dict[str, Any]:
        """The same decision from inside the application: the company's owner, signed in, needs no link (the session
        is the credential). The link e-mailed earlier is spent with it, so the request is decided exactly once."""
        async with self._db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            row = await repo.get(integration_id, lock=True)
            if row is None or not self._may_see(actor, row):
                raise IntegrationError("not-found", "The integration does not exist.", status=404)
            if self._acting_side(actor, row) is not Side.CLIENT:
                raise IntegrationError(
                    "own-office", "The office cannot consent on its client's behalf: the client must.", status=403
                )
            # 409, not the link's 410: the request exists for this user, it is its state that refuses.
            self._require_open(row, closed_status=409)
            return await self._decide(session, repo, row, actor, decision)

    async def _decide(
        self,
        session: Any,
        repo: IntegrationRepository,
        row: Row[Any],
        visitor: Principal | None,
        decision: ConsentDecision,
    ) -> dict[str, Any]:
        key = self._sealing_key()
        now = self.clock()
        by = visitor.id if visitor is not None else f"link:{row.client_email}"
        used = {"consent_used_at": now}
        if not decision.agree:
            row = await self._transition(
                repo, row, Transition.REFUSE, Side.CLIENT, by, used | {"ended_at": now, "ended_by": by}
            )
            return self._view(row)
        if decision.access_mode is None:
            raise IntegrationError("access-mode", "Choose how the office gets into KSeF: grant or token.", status=422)
        check_transition(IntegrationState(row.state), Transition.CONSENT, side=Side.CLIENT)
        code = ActivationCode.new()
        salt, digest = code.hash()
        code_expires = expires(now, self._settings.activation_code_ttl_s)
        await repo.change(
            row.id,
            used
            | {
                "state": IntegrationState.CONSENTED.value,
                "revision": row.revision + 1,
                "access_mode": decision.access_mode,
                "consented_at": now,
                "consented_by": by,
                "code_salt": salt,
                "code_hash": digest,
                "code_expires_at": code_expires,
                "code_attempts": 0,
                "updated_at": now,
            },
        )
        consented = await repo.get(row.id)
        assert consented is not None
        row = consented
        form = f"{self._public_url}/integrations/{row.id}/activate"
        await self._emit(
            session,
            IntegrationConsented(
                **self._common(row, Side.CLIENT, by),
                sealed_link=IntegrationConsented.seal_link(key, form),
                expires_at=code_expires,
                language=row.return_language,
                return_email=row.return_email,
                client_email=row.client_email if visitor is None else None,
                client_language=row.client_language,
                sealed_code=IntegrationConsented.seal_code(key, code.display),
                code_expires_at=code_expires,
                return_language=row.return_language,
            ),
        )
        log.info("integration %s: consent given, activation code issued", row.id)
        return self._view(row)

    async def expire_overdue(self, limit: int = 100) -> int:
        """Expire what ran out unused (a link, or a code), each in its own transaction with its event, so the office
        sees it and auth-svc ends the pending relation without anybody having to touch the integration first."""
        async with self._db.sessionmaker() as session:
            overdue = [r.id for r in await IntegrationRepository(session).overdue(self.clock(), limit)]
        expired = 0
        for integration_id in overdue:
            async with self._db.sessionmaker() as session, session.begin():
                repo = IntegrationRepository(session)
                row = await repo.get(integration_id, lock=True)
                now = self.clock()
                due = row is not None and (
                    (row.state == IntegrationState.REQUESTED and row.consent_expires_at <= now)
                    or (row.state == IntegrationState.CONSENTED and row.code_expires_at <= now)
                )
                if row is None or not due:
                    continue  # changed since it was listed
                await self._transition(
                    repo, row, Transition.EXPIRE, Side.PLATFORM, None, {"ended_at": now, "code_hash": None}
                )
                expired += 1
        return expired

    # --- the gateway's reports -------------------------------------------------------------------------------------

    async def access_changed(self, session: Any, event: CredentialAccessChange) -> None:
        status = "lost" if isinstance(event, CredentialAccessLost) else "verified"
        values = {"access_status": status, "access_checked_at": event.checked_at, "access_reason": event.reason}
        office_nip = event.office_nip if event.access_mode == "grant" else None
        await IntegrationRepository(session).set_access(event.client_nip, office_nip, values)

    # --- internals -------------------------------------------------------------------------------------------------

    def _view(self, row: Row[Any]) -> dict[str, Any]:
        return view(row, now=self.clock(), max_attempts=self._settings.max_code_attempts)

    def _fresh_request(self, now: datetime, revision: int) -> dict[str, Any]:
        return {
            "state": IntegrationState.REQUESTED.value,
            "revision": revision,
            "access_mode": None,
            "consented_at": None,
            "consented_by": None,
            "activated_at": None,
            "activated_by": None,
            "ended_at": None,
            "ended_by": None,
            "suspended_by_side": None,
            "consent_expires_at": expires(now, self._settings.consent_link_ttl_s),
            "consent_used_at": None,
            "code_salt": None,
            "code_hash": None,
            "code_expires_at": None,
            "code_attempts": 0,
            "access_status": None,
            "access_checked_at": None,
            "access_reason": None,
            "updated_at": now,
        }

    def _require_open(self, row: Row[Any], *, closed_status: int) -> None:
        """A consent request can be decided while it is requested and before its expiry (link or signed in)."""
        if row.state != IntegrationState.REQUESTED:
            raise IntegrationError(
                "link-closed", f"This request is no longer open (it is {row.state}).", status=closed_status
            )
        if self.clock() >= row.consent_expires_at:
            raise IntegrationError(
                "link-expired", "This consent request has expired; ask the office to send a new one.", status=410
            )

    async def _usable_link(
        self, repo: IntegrationRepository, token: str, visitor: Principal | None, *, lock: bool = False
    ) -> Row[Any]:
        row = await repo.by_consent_token(ConsentLink.digest_of(token), lock=lock) if token else None
        if row is None:
            raise IntegrationError(
                "link-invalid", "This consent link is not valid (mistyped, or replaced by a newer request).", status=404
            )
        if row.consent_used_at is not None:
            raise IntegrationError("link-used", "This consent link has already been used.", status=410)
        self._require_open(row, closed_status=410)
        if visitor is not None:
            if visitor.org == row.office_id:
                raise IntegrationError(
                    "own-office", "The office cannot consent on its client's behalf: the client must.", status=403
                )
            if visitor.org_kind != "client" or row.client_nip not in visitor.nips:
                raise IntegrationError(
                    "other-company",
                    "You are signed in to another company: only a user of the company asked can decide.",
                    status=403,
                )
        return row

    async def _transition(
        self,
        repo: IntegrationRepository,
        row: Row[Any],
        transition: Transition,
        side: Side,
        by: str | None,
        extra: dict[str, Any],
    ) -> Row[Any]:
        suspended_by = Side(row.suspended_by_side) if row.suspended_by_side else None
        target = check_transition(IntegrationState(row.state), transition, side=side, suspended_by=suspended_by)
        now = self.clock()
        await repo.change(row.id, {"state": target.value, "revision": row.revision + 1, "updated_at": now} | extra)
        changed = await repo.get(row.id)
        assert changed is not None
        contract = _EVENTS[transition]
        extra_fields: dict[str, Any] = {}
        if contract is IntegrationRefused:
            extra_fields = {
                "return_email": changed.return_email,
                "return_language": changed.return_language,
                "client_name": changed.client_name,
            }
        await self._emit(repo.s, contract(**self._common(changed, side, by), **extra_fields))
        log.info("integration %s: %s by the %s", row.id, target, side)
        return changed

    def _common(self, row: Row[Any], side: Side, by: str | None) -> dict[str, Any]:
        return {
            "integration_id": row.id,
            "revision": row.revision,
            "state": row.state,
            "office_id": row.office_id,
            "office_nip": row.office_nip,
            "office_name": row.office_name,
            "client_nip": row.client_nip,
            "send_sales": row.send_sales,
            "access_mode": row.access_mode,
            "changed_at": row.updated_at,
            "changed_by_side": side.value,
            "changed_by": by,
        }

    async def _emit(self, session: Any, event: IntegrationChange) -> None:
        await self._outbox.emit(session, event, client_nip=event.client_nip, tenant=str(event.office_id))

    def _sealing_key(self) -> str:
        if self._notify_key is None:
            raise IntegrationError(
                "mail-unavailable",
                "E-mail is not configured (APPROVAL_NOTIFY_PUBLIC_KEY): consent links cannot be sent.",
                status=503,
            )
        return self._notify_key

    @staticmethod
    def _office_member(actor: Principal, office_id: uuid.UUID, permission: str | None = CLIENTS_MANAGE) -> None:
        if actor.org != office_id or actor.org_kind != "office":
            raise IntegrationError("not-found", "The office does not exist.", status=404)
        if permission is not None and permission not in actor.perms:
            raise IntegrationError("forbidden", f"This needs the {permission} permission.", status=403)

    async def _office_row(
        self, repo: IntegrationRepository, actor: Principal, integration_id: uuid.UUID, *, lock: bool = False
    ) -> Row[Any]:
        row = await repo.get(integration_id, lock=lock)
        if row is None or actor.org != row.office_id or actor.org_kind != "office":
            raise IntegrationError("not-found", "The integration does not exist.", status=404)
        self._office_member(actor, row.office_id)
        return row

    @staticmethod
    def _client_nip_of(actor: Principal) -> str:
        if actor.org_kind != "client" or len(actor.nips) != 1:
            raise IntegrationError("forbidden", "Only a client company's user sees its offices.", status=403)
        (nip,) = actor.nips
        return nip

    @staticmethod
    def _may_see(actor: Principal, row: Row[Any]) -> bool:
        if actor.org_kind == "office":
            return bool(actor.org == row.office_id)
        return actor.org_kind == "client" and row.client_nip in actor.nips

    @staticmethod
    def _acting_side(actor: Principal, row: Row[Any]) -> Side:
        if actor.org_kind == "office" and actor.org == row.office_id:
            if CLIENTS_MANAGE not in actor.perms:
                raise IntegrationError("forbidden", f"This needs the {CLIENTS_MANAGE} permission.", status=403)
            return Side.OFFICE
        if CLIENT_OWNER_PERMISSION not in actor.perms:
            raise IntegrationError(
                "forbidden", f"Only the company's owner ({CLIENT_OWNER_PERMISSION}) can do this.", status=403
            )
        return Side.CLIENT


def view(row: Row[Any], *, now: datetime | None = None, max_attempts: int = 5) -> dict[str, Any]:
    """The integration as the office's and the client's screens show it; never a hash or a secret."""
    code_state = None
    if row.state == IntegrationState.CONSENTED:
        code_state = "pending"
        if row.code_attempts >= max_attempts:
            code_state = "locked"
        elif row.code_expires_at is not None and now is not None and now >= row.code_expires_at:
            code_state = "expired"
    return {
        "id": row.id,
        "office_id": row.office_id,
        "office_nip": row.office_nip,
        "office_name": row.office_name,
        "client_nip": row.client_nip,
        "client_name": row.client_name,
        "client_email": row.client_email,
        "client_language": row.client_language,
        "return_email": row.return_email,
        "return_language": row.return_language,
        "scope": {"read_purchases": True, "send_sales": row.send_sales},
        "state": row.state,
        "revision": row.revision,
        "access_mode": row.access_mode,
        "access": {"status": row.access_status, "checked_at": row.access_checked_at, "reason": row.access_reason},
        "requested_at": row.requested_at,
        "requested_by": row.requested_by,
        "consent_expires_at": row.consent_expires_at if row.state == IntegrationState.REQUESTED else None,
        "consented_at": row.consented_at,
        "consented_by": row.consented_by,
        "activated_at": row.activated_at,
        "activated_by": row.activated_by,
        "ended_at": row.ended_at,
        "ended_by": row.ended_by,
        "suspended_by": row.suspended_by_side,
        "activation_code": code_state
        and {
            "state": code_state,
            "expires_at": row.code_expires_at,
            "attempts_left": max(0, max_attempts - row.code_attempts),
        },
        "updated_at": row.updated_at,
    }
