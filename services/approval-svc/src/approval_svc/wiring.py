"""The parts of one approval-svc runtime that its routers, consumers and components share."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from approval_svc.integrations.expiry import ExpirySweeper
from approval_svc.integrations.offices import OfficeDirectory
from approval_svc.integrations.service import Integrations
from approval_svc.months.service import MonthApprovals
from approval_svc.settings import ApprovalSettings
from platform_common.runtime import ServiceRuntime


@dataclass(frozen=True)
class Approval:
    integrations: Integrations
    offices: OfficeDirectory
    expiry: ExpirySweeper
    months: MonthApprovals

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Approval:
        built = _BUILT.get(runtime)
        if built is None:
            settings = runtime.settings
            assert isinstance(settings, ApprovalSettings)
            integrations = Integrations(
                runtime.db,
                runtime.outbox,
                settings.integrations,
                public_url=settings.public_url,
                notify_public_key=settings.notify_public_key,
            )
            built = _BUILT[runtime] = cls(
                integrations=integrations,
                offices=OfficeDirectory(settings.auth_api_url, timeout_s=settings.auth.timeout_s),
                expiry=ExpirySweeper(integrations, interval_s=settings.integrations.expiry_interval_s),
                months=MonthApprovals(runtime.db, runtime.outbox),
            )
        return built


_BUILT: weakref.WeakKeyDictionary[ServiceRuntime, Approval] = weakref.WeakKeyDictionary()
