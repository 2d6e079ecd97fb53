"""Schemathesis against the gateway's own OpenAPI document (fakes behind it): no 5xx, and every
status returned is one the document declares. Bounded and derandomised so CI is repeatable."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from orchestrator.config import ExpertRegistry
from orchestrator.faces.gateway import create_app
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

APP = create_app(Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=FakeDispatcher()),
                 api_keys=[])
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_only_declared_statuses(case):
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
