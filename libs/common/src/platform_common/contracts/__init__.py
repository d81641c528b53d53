"""Cross-service event contracts. The only place services share types.

Adding an event: subclass ``EventContract`` with its type, version and topic and list it in ``CONTRACTS``.
A breaking change is a new version (and, if old consumers must not see it, a new topic).
"""

from platform_common.contracts.integrations import (
    INTEGRATION_EVENTS,
    CredentialAccessLost,
    CredentialAccessVerified,
)
from platform_common.contracts.invoices import (
    InvoiceFetched,
    InvoiceSent,
    Party,
    SendingMode,
)
from platform_common.contracts.months import (
    MONTH_EVENTS,
    ApprovedDocument,
    MonthApproved,
    MonthLateArrival,
    MonthUnlocked,
    Recipient,
)
from platform_common.contracts.outages import OUTAGE_EVENTS, KsefOutageEnded, KsefOutageStarted, SalesDeadlineAlerted
from platform_common.contracts.status import DocumentKind, StatusChanged
from platform_common.contracts.users import PasswordResetRequested, UserInvited
from platform_common.contracts.webhooks import WEBHOOK_EVENTS, WebhookSubscriptionDisabled
from platform_common.messaging.envelope import EventContract

_ALL: tuple[type[EventContract], ...] = (
    InvoiceFetched,
    InvoiceSent,
    StatusChanged,
    *MONTH_EVENTS,
    UserInvited,
    PasswordResetRequested,
    *INTEGRATION_EVENTS,
    CredentialAccessVerified,
    CredentialAccessLost,
    *OUTAGE_EVENTS,
    *WEBHOOK_EVENTS,
)
CONTRACTS: dict[tuple[str, int], type[EventContract]] = {(c.event_type, c.event_version): c for c in _ALL}

TOPICS: tuple[str, ...] = tuple(sorted({c.topic for c in CONTRACTS.values()}))

__all__ = [
    "CONTRACTS",
    "TOPICS",
    "ApprovedDocument",
    "CredentialAccessLost",
    "CredentialAccessVerified",
    "DocumentKind",
    "InvoiceFetched",
    "InvoiceSent",
    "KsefOutageEnded",
    "KsefOutageStarted",
    "MonthApproved",
    "MonthLateArrival",
    "MonthUnlocked",
    "Party",
    "PasswordResetRequested",
    "Recipient",
    "SalesDeadlineAlerted",
    "SendingMode",
    "StatusChanged",
    "UserInvited",
    "WebhookSubscriptionDisabled",
]
