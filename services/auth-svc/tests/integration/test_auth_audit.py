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
