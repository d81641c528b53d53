"""A damaged API key is refused from its checksum alone: auth-svc never looks it up."""

from __future__ import annotations

from typing import Any, cast

import pytest
from pydantic import SecretStr

from auth_svc.api_keys.service import ApiKeys
from auth_svc.members.service import Members
from auth_svc.organisations.service import Organisations
from auth_svc.settings import AuthSettings
from auth_svc.signing_keys.service import KeyStore
from auth_svc.testing import FakeClock
from auth_svc.unit_of_work import UnitOfWork
from platform_common.auth.api_keys import new_api_key
from platform_common.settings import DatabaseSettings


class DatabaseReached(Exception):
    pass


def _no_database() -> Any:
    raise DatabaseReached


@pytest.fixture
def api_keys() -> ApiKeys:
    settings = AuthSettings(db=DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///:memory:")), environment="test")
    uow = UnitOfWork(cast(Any, _no_database), FakeClock())
    unused: Any = None
    return ApiKeys(uow, settings, cast(KeyStore, unused), cast(Organisations, unused), cast(Members, unused))


@pytest.mark.parametrize("damage", ["typo", "checksum", "truncated", "old format"])
async def test_a_damaged_key_never_reaches_the_database(api_keys: ApiKeys, damage: str) -> None:
    parsed, key = new_api_key()
    damaged = {
        "typo": key[:10] + ("0" if key[10] != "0" else "1") + key[11:],
        "checksum": key[:-1] + ("0" if key[-1] != "0" else "1"),
        "truncated": key[:-3],
        "old format": f"khk_{parsed.key_id}_{parsed.secret}",
    }[damage]
    assert await api_keys.authenticate(damaged) is None
    assert await api_keys.introspect(api_key=damaged) == {"active": False}


async def test_an_intact_key_is_looked_up(api_keys: ApiKeys) -> None:
    with pytest.raises(DatabaseReached):
        await api_keys.authenticate(new_api_key()[1])
