"""The service driven by schemathesis from its own OpenAPI schema: whatever a client sends, no server error.

A 503 with ``Retry-After`` is the service's designed answer to a ``strict`` request that no operating point can
serve within its budget now; every other 5xx is a failure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from helpers.toy_runtime import toy_parts
from hypothesis import HealthCheck, settings

from dynhat.runtime import DynamicTranslator, GreedyPolicy, PointCost
from dynhat.runtime.service import ServiceLimits, create_app

_SPACE_DIR = tempfile.TemporaryDirectory()
_model, _vocab, _library = toy_parts(Path(_SPACE_DIR.name))
APP = create_app(DynamicTranslator(_model, _vocab, _library, 60_000.0, GreedyPolicy(),
                                   costs=[PointCost(1, 1), PointCost(2, 2), PointCost(4, 4)]),
                 ServiceLimits(max_sentence_subwords=40, max_request_subwords=120, budget_token="t0ken"))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error(case) -> None:
    response = case.call()
    if response.status_code == 503:
        assert response.headers.get("retry-after") == "1", response.text
    else:
        assert response.status_code < 500, (case.as_curl_command(), response.text)
