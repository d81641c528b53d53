from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from auth_svc import demo
from auth_svc.main import DEFINITION, run
from auth_svc.testing import open_harness
from platform_common.migrations import upgrade


async def test_demo_data_is_idempotent_and_every_demo_account_logs_in(tmp_path: Path) -> None:
    async with open_harness(f"sqlite+aiosqlite:///{tmp_path}/demo.db", seed=False) as h:
        runtime = h.app.state.runtime
        first = await demo.ensure_demo_data(runtime, h.service)
        second = await demo.ensure_demo_data(runtime)
        assert first.users == second.users and first.office_id == second.office_id
        for email in (demo.OPERATOR, demo.OFFICE_ADMIN, demo.ACCOUNTANT, demo.CLIENT_OWNER, demo.CLIENT_MEMBER):
            response = await h.client.post("/login", json={"email": email, "password": demo.DEMO_PASSWORD})
            assert response.status_code == 200, (email, response.text)
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        me = (await h.client.get("/me", headers=headers)).json()
        assert me["context"]["nips"] == [demo.CLIENT_ACTIVE[1]]


def test_bootstrap_cli_prints_ids_and_never_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/boot.db"
    upgrade(DEFINITION.migrations, url, DEFINITION.schema)
    operator_password = "operator passphrase 1"
    admin_password = "office admin passphrase"
    monkeypatch.setenv("AUTH_DB__URL", url)
    monkeypatch.setenv("AUTH_BOOTSTRAP_OPERATOR_PASSWORD", operator_password)
    monkeypatch.setenv("AUTH_BOOTSTRAP_ADMIN_PASSWORD", admin_password)
    argv = [
        "bootstrap",
        "--operator-email",
        "root@example.com",
        "--office-name",
        "Biuro Pierwsze",
        "--office-nip",
        "526-025-02-16",
        "--admin-email",
        "boss@example.com",
    ]
    run(argv)
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["operator_created"] is True and result["office_admin_created"] is True
    assert {"operator_user_id", "office_id", "office_admin_user_id", "signing_key"} <= set(result)
    assert operator_password not in out.out + out.err and admin_password not in out.out + out.err

    run(argv)  # again: everything is reused
    again = json.loads(capsys.readouterr().out)
    assert again["office_id"] == result["office_id"] and again["operator_created"] is False

    monkeypatch.setenv("AUTH_BOOTSTRAP_OPERATOR_PASSWORD", "short")
    with pytest.raises(SystemExit, match="Password too short"):
        run(["bootstrap", "--operator-email", "other@example.com", "--office-name", "X"])
    assert os.environ["AUTH_DB__URL"] == url
