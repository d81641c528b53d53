"""Who may act in which context (REFERENCE.md §15). Read by authentication (415 when nothing is held) and by
every endpoint through the permissions baked into access tokens.

Owner rule: the subject whose NIP equals the context NIP holds every permission except VatUeManage.
(Grants, persons, subjects and blocks are added by the permissions/testdata area.)
"""

from __future__ import annotations

from datetime import datetime

from ksef_sim.security import Identifier
from ksef_sim.store import Store

OWNER_PERMISSIONS = frozenset(
    {
        "InvoiceRead",
        "InvoiceWrite",
        "CredentialsRead",
        "CredentialsManage",
        "SubunitManage",
        "Introspection",
        "EnforcementOperations",
    }
)


def effective_permissions(store: Store, subject: Identifier, context: Identifier, now: datetime) -> frozenset[str]:
    """The permissions ``subject`` holds in ``context`` right now (empty: authentication ends with status 415)."""
    if context.type == "Nip" and subject.type == "Nip" and subject.value == context.value:
        return OWNER_PERMISSIONS
    return frozenset()


def context_blocked(store: Store, context: Identifier) -> bool:
    """``/testdata/context/block``: authentication into the context ends with status 480."""
    return False


def person_deceased(store: Store, subject: Identifier) -> bool:
    """``/testdata/person`` with ``isDeceased``: authentication ends with status 470."""
    return False
