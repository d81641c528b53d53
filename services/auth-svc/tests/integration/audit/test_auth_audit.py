from __future__ import annotations

import pytest

from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


async def test_security_events_are_recorded_and_readable_by_the_own_admin_only(h: AuthHarness) -> None:
    office = h.world.orgs["A"]
    admin = await h.headers("a_admin")
    await h.login("a_accountant", password="wrong password!")
    key = (
        await h.client.post(
            f"/organisations/{office}/api-keys", json={"name": "erp", "perms": ["ksef.read"]}, headers=admin
        )
    ).json()
    await h.client.delete(f"/organisations/{office}/api-keys/{key['id']}", headers=admin)
    await h.client.patch(
        f"/organisations/{office}/members/{h.world.users['a_accountant']}", json={"role": "office_admin"}, headers=admin
    )

    entries = (await h.client.get(f"/organisations/{office}/audit", headers=admin)).json()
    events = [e["event"] for e in entries]
    for expected in ("login.succeeded", "login.failed", "api_key.created", "api_key.revoked", "role.changed"):
        assert expected in events, expected
    assert entries == sorted(entries, key=lambda e: e["id"], reverse=True)
    created = next(e for e in entries if e["event"] == "api_key.created")
    assert created["actor_id"] == str(h.world.users["a_admin"]) and created["subject_id"] == key["id"]
    assert key["key"] not in str(entries)
    assert all(e["ip"] == "203.0.113.10" for e in entries if e["event"].startswith("login."))

    page = (await h.client.get(f"/organisations/{office}/audit?limit=2", headers=admin)).json()
    older = (
        await h.client.get(f"/organisations/{office}/audit?limit=2&before_id={page[-1]['id']}", headers=admin)
    ).json()
    assert len(page) == 2 and all(e["id"] < page[-1]["id"] for e in older)
    only = (await h.client.get(f"/organisations/{office}/audit?event=api_key.revoked", headers=admin)).json()
    assert [e["event"] for e in only] == ["api_key.revoked"]

    # Office B's admin neither sees A's entries nor learns that A exists; B's own log has none of A's events.
    b = await h.headers("b_admin")
    assert (await h.client.get(f"/organisations/{office}/audit", headers=b)).status_code == 404
    b_events = (await h.client.get(f"/organisations/{h.world.orgs['B']}/audit", headers=b)).json()
    assert all(e["subject_id"] != key["id"] for e in b_events)
    assert (
        await h.client.get(f"/organisations/{office}/audit", headers=await h.headers("c_member"))
    ).status_code == 404


async def test_operator_actions_inside_a_tenant_are_in_the_tenants_log(h: AuthHarness) -> None:
    client = h.world.orgs["C"]
    ops = await h.headers("ops")
    renamed = await h.client.patch(f"/organisations/{client}", json={"name": "Client C (support)"}, headers=ops)
    assert renamed.status_code == 200, renamed.text
    invited = await h.client.post(
        f"/organisations/{client}/members", json={"email": "helper@example.com", "role": "client_owner"}, headers=ops
    )
    assert invited.status_code == 201, invited.text
    added = await h.client.post(
        f"/organisations/{h.world.orgs['B']}/clients", json={"nip": "7777777702", "name": "C"}, headers=ops
    )
    assert added.status_code == 201, added.text
    await h.client.patch(f"/organisations/{client}", json={"name": "Client C"}, headers=await h.headers("c_owner"))

    owner = await h.headers("c_owner")
    entries = (await h.client.get(f"/organisations/{client}/audit", headers=owner)).json()
    by_event = {e["event"]: e for e in entries if e["actor_id"] == str(h.world.users["ops"])}
    assert set(by_event) == {"organisation.renamed", "member.invited", "client.added"}
    for entry in by_event.values():
        assert entry["operator"] is True and entry["details"]["operator"] is True
    assert by_event["member.invited"]["subject_id"] == "helper@example.com"
    assert by_event["organisation.renamed"]["details"]["name"] == "Client C (support)"
    # The owner's own rename is theirs, not an operator's.
    own = next(
        e for e in entries if e["event"] == "organisation.renamed" and e["actor_id"] != str(h.world.users["ops"])
    )
    assert own["operator"] is False and "operator" not in own["details"]
    # Nothing secret: the invitation's link token (sealed in the event) is nowhere in the log.
    token = h.link_token((await h.events("user.invited"))[-1])
    assert token not in str(entries)
    # Office B, where ops added C as a client, sees that entry in its own log too.
    b_entries = (
        await h.client.get(f"/organisations/{h.world.orgs['B']}/audit", headers=await h.headers("b_admin"))
    ).json()
    assert [e["event"] for e in b_entries if e["operator"]] == ["client.added"]

    # Other tenants neither read C's log nor find C's operator entries in theirs.
    for other in ("d_owner", "b_admin", "a_admin"):
        denied = await h.client.get(f"/organisations/{client}/audit", headers=await h.headers(other))
        assert denied.status_code == 404, other
        assert denied.headers["content-type"] == "application/problem+json"
    # Inside C without audit.read: 403, not 404 (the member knows C exists).
    member = await h.client.get(f"/organisations/{client}/audit", headers=await h.headers("c_member"))
    assert member.status_code == 403 and member.headers["content-type"] == "application/problem+json"
    d_entries = (
        await h.client.get(f"/organisations/{h.world.orgs['D']}/audit", headers=await h.headers("d_owner"))
    ).json()
    assert not [e for e in d_entries if e["operator"] or e["subject_id"] in (str(client), "helper@example.com")]
