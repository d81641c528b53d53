"""Spec conformance: schemathesis drives every routed operation of the official KSeF 2.6.0 OpenAPI document
(/work/shared/ksef/openapi/open-api.json) and every response must match the spec: a documented status code, a
documented content type, the documented body schema and headers.

Both generation modes run: positive data (valid per the spec; mostly unknown references, so mostly 400s with
KSeF codes, and 200s where the input alone is enough) and negative data (junk that the simulator must reject with a
documented 400, i.e. ``21405``). Each operation runs against a fresh in-memory simulator, so state one operation's
random input leaves behind (a blocked context, custom rate limits, a revoked session) cannot mask another's.
Every call carries a freshly minted access token of an owner context holding every permission.

"Implemented" means routed in the app; ``test_every_spec_operation_is_routed`` separately insists that all are.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ksef_sim.main import API_PREFIX, create_app
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

SPEC_PATH = Path("/work/shared/ksef/openapi/open-api.json")
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
NIP = "5265877635"
ALL_PERMISSIONS = frozenset(
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
# Exactly the response-conformance checks. Not included: schemathesis' negative_data_rejection /
# positive_data_acceptance (they judge whether a 2xx/4xx was deserved, which needs state the random data cannot
# set up: a valid random body for an unknown session is rightly a 400) and not_a_server_error (a 500 is already an
# undocumented status for status_code_conformance, since the spec lists none).
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 4, GenerationMode.NEGATIVE: 3}

Operation = tuple[str, str]  # (METHOD, spec path without /v2)


def spec_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return document


def spec_operations(document: dict[str, Any]) -> set[Operation]:
    return {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS
    }


def routed_operations(app: FastAPI) -> set[Operation]:
    """What the app routes under /v2, read from its own OpenAPI document (FastAPI 0.16x includes routers lazily,
    so ``app.routes`` no longer lists the endpoints themselves)."""
    return {
        (method.upper(), path[len(API_PREFIX) :])
        for path, item in app.openapi()["paths"].items()
        if path.startswith(API_PREFIX + "/")
        for method in item
        if method in HTTP_METHODS
    }


def settings(database_path: Path | None = None) -> SimSettings:
    return SimSettings(
        database_path=database_path,
        public_base_url="https://ksef-sim.test",
        rate_limits=RateLimitMode.OFF,
        permanent_storage_delay_s=0,
        permanent_storage_jitter_s=0,
        random_seed=1234,
    )


@asynccontextmanager
async def _state_is_set_by_the_test(_app: FastAPI) -> AsyncIterator[None]:
    yield


class FreshSimulators:
    """One app (building it costs more than a request), a fresh simulator state behind it per operation.

    Each state starts as a copy of one template state file, so the Ministry keys are generated once, not per copy.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.template = workdir / "template.sqlite3"
        Sim.open(settings(self.template)).close()
        self.app = create_app(settings())
        self.app.router.lifespan_context = _state_is_set_by_the_test
        self._count = 0

    @contextmanager
    def fresh(self) -> Iterator[Sim]:
        self._count += 1
        path = self.workdir / f"state-{self._count}.sqlite3"
        shutil.copyfile(self.template, path)
        sim = Sim.open(settings(path))
        self.app.state.sim = sim
        try:
            yield sim
        finally:
            sim.close()


def mint_owner_token(sim: Sim) -> str:
    token, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(seconds=sim.settings.access_token_ttl_s),
        auth_reference_number="20260101-AU-0000000000-0000000000-00",
        context=Identifier("Nip", NIP),
        subject=Identifier("Nip", NIP),
        auth_method="XadesSignature",
        permissions=ALL_PERMISSIONS,
    )
    return token


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def exercise(operation: Any, app: FastAPI, sim: Sim) -> Outcome:
    """Generated cases of both modes against ``app``; failures are collected (not raised, so nothing shrinks)."""
    outcome = Outcome()
    for mode, examples in EXAMPLES.items():
        try:
            _exercise_mode(operation, mode, examples, app, sim, outcome)
        except Unsatisfiable:
            # Negative mode needs something to make invalid; an operation without parameters or body (e.g. POST
            # /auth/challenge) has nothing, and schemathesis reports that as unsatisfiable.
            if mode is not GenerationMode.NEGATIVE:
                raise
    return outcome


def _exercise_mode(
    operation: Any, mode: GenerationMode, examples: int, app: FastAPI, sim: Sim, outcome: Outcome
) -> None:
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        headers = {"Authorization": f"Bearer {mint_owner_token(sim)}"}
        response = case.call(app=app, base_url=f"http://testserver{API_PREFIX}", headers=headers)
        outcome.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as failure:
            found = getattr(failure, "exceptions", (failure,))
            titles = "; ".join(sorted({getattr(f, "title", type(f).__name__) for f in found}))
            outcome.failures.append(
                f"{mode.value}: {case.method} {case.formatted_path} -> {response.status_code} [{titles}] "
                f"{response.text[:300]!r}"
            )

    run()


def test_every_spec_operation_is_routed() -> None:
    """All 78 operations of the 2.6.0 spec exist in the simulator, with the spec's path parameter names."""
    document = spec_document()
    routed = routed_operations(create_app(settings()))
    missing = sorted(spec_operations(document) - routed)
    assert not missing, f"{len(missing)} spec operations are not routed: " + ", ".join(f"{m} {p}" for m, p in missing)
    extra = sorted(routed - spec_operations(document))
    assert not extra, "routed under /v2 but not in the spec: " + ", ".join(f"{m} {p}" for m, p in extra)


def test_routed_operations_answer_as_the_spec_documents(tmp_path: Path) -> None:
    document = spec_document()
    simulators = FreshSimulators(tmp_path)
    routed = routed_operations(simulators.app)
    schema = schemathesis.openapi.from_dict(document)
    problems: dict[str, list[str]] = {}
    exercised: dict[str, Counter[int]] = {}
    try:
        for result in schema.get_all_operations():
            # The official document must load completely; a schema error here is a finding, not something to skip.
            assert isinstance(result, Ok), result
            operation = result.ok()
            key = (operation.method.upper(), operation.path)
            if key not in routed:
                continue  # reported by test_every_spec_operation_is_routed
            with simulators.fresh() as sim:
                outcome = exercise(operation, simulators.app, sim)
            name = f"{key[0]} {key[1]}"
            exercised[name] = outcome.statuses
            if outcome.failures:
                problems[name] = outcome.failures
    finally:
        schemathesis_asgi.shutdown_lifespans()

    assert exercised, "no routed operation was found in the spec"
    silent = sorted(name for name, statuses in exercised.items() if not statuses)
    assert not silent, f"operations that were never called: {silent}"
    report = "\n".join(f"{name}:\n  " + "\n  ".join(failures[:3]) for name, failures in sorted(problems.items()))
    assert not problems, f"{len(problems)} of {len(exercised)} operations answered outside the spec:\n{report}"


# --- the harness itself ----------------------------------------------------------------------------------------


def test_the_harness_flags_a_response_outside_the_spec(tmp_path: Path) -> None:
    """Guards against a harness that silently passes: a body of the wrong shape and an undocumented status."""
    document = spec_document()
    schema = schemathesis.openapi.from_dict(document)
    operation = schema["/security/public-key-certificates"]["GET"]
    broken = FastAPI(lifespan=_state_is_set_by_the_test)

    @broken.get(f"{API_PREFIX}/security/public-key-certificates")
    async def wrong_shape() -> dict[str, str]:
        return {"certificates": "not a list"}

    with FreshSimulators(tmp_path).fresh() as sim:
        try:
            outcome = exercise(operation, broken, sim)
        finally:
            schemathesis_asgi.shutdown_lifespans()
    assert outcome.statuses[200] >= 1
    assert outcome.failures and all("200" in f for f in outcome.failures), outcome.failures
