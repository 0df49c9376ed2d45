"""Schemathesis against /openapi.json: generated requests, valid and invalid, for every operation.

Every answer must be a non-5xx that the spec documents (status, headers, content type, body
schema); schema-valid requests must be accepted and schema-violating ones refused, and requests
without valid credentials refused (the few exceptions are in ``checks_left_out``). The broker
runs in-process on fakeredis and memory storage; the number of cases is bounded (and counted:
at least 500) and the generation is derandomized, so a CI run is reproducible.
"""

from __future__ import annotations

import fakeredis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from broker import Settings, create_app
from broker.openapi import spec
from broker.queue import TaskQueue
from storage import open_store
from tests.unit.brokerkit import recheck_every

EXAMPLES_PER_OPERATION = 80
MINIMUM_CASES = 500
ADMIN_TOKEN = "fuzz-admin"

app = create_app(
    Settings(client_tokens=("fuzz-client",), worker_tokens=("fuzz-worker",),
             admin_tokens=(ADMIN_TOKEN,), storage_url="memory://", max_wait=1,
             max_payload_bytes=64 * 1024, webhook_secret="fuzz-secret"),
    queue=TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer())),
    store=open_store("memory://"),
)  # fmt: skip
recheck_every(app, 0.05)
schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
cases: list[str] = []


@schema.auth()
class AdminToken:
    """Every request as an admin. Given to schemathesis as the API's auth, rather than pasted
    onto each request, so that schemathesis knows the credentials are valid: it leaves the
    token off the negative cases that drop the Authorization header, drops the function keys
    it would make up for the v0 endpoints, and checks (ignored_auth) that a request without
    credentials or with a wrong bearer token, ?code= or x-functions-key is refused."""

    def get(self, case, context):
        return ADMIN_TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


# The fields of each v0 operation (docs/compat-azureml.md): the spec lists each both as a query
# parameter and as a body property.
V0_FIELDS = {
    f"{method.upper()} {path}": [parameter["name"] for parameter in operation.get("parameters", [])
                                 if parameter["in"] == "query"]
    for path, item in spec()["paths"].items() if path.startswith("/api/")
    for method, operation in item.items()
}  # fmt: skip


def checks_left_out(case) -> list:
    """The checks a case cannot pass for a reason the spec language cannot state; only those."""
    left_out = []
    # Whether a webhook URL is accepted depends on the broker's SSRF guard (its allow-list and the
    # address the URL names), which no schema can state: such a submit may be a 400
    # webhook_refused although the spec's types allow it. Everything else is still checked.
    # The same holds for a payload reference, which names a blob the broker may not be allowed to
    # read (INFERBOX_PAYLOAD_SOURCES).
    if (case.query and "webhook" in case.query) or (
            case.media_type == "application/vnd.inferbox.payload-ref+json"):
        left_out.append(positive_data_acceptance)
    # OpenAPI 3.1 cannot describe multipart/mixed framing (a boundary, unnamed parts with headers
    # of their own), so the spec declares the body as bytes, and schemathesis sends bytes with no
    # boundary, which the broker rightly refuses. Real batches: test_api.py, test_worker_batch.py,
    # test_batches.py.
    if case.operation.label in ("POST /puttaskresults", "POST /predictbatch"):
        left_out.append(positive_data_acceptance)
    # A v0 field comes from the query string, else from the body, and the spec cannot say "in one
    # of the two" (it makes both optional) nor "the body's copy is unread when the query string
    # has one". So a request with a field in neither place is refused though spec-valid, and a
    # bad body field behind a query field is ignored though spec-invalid. tests/unit/
    # test_compat.py pins both rules; every other case is checked both ways.
    fields = V0_FIELDS.get(case.operation.label)
    if fields:
        query = case.query or {}
        body = case.body if isinstance(case.body, dict) else {}
        if any(name not in query and name not in body for name in fields):
            left_out.append(positive_data_acceptance)
        if any(name in query for name in fields):
            left_out.append(negative_data_rejection)
    return left_out


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_the_api_keeps_to_its_spec(case):
    cases.append(case.operation.label)
    case.call_and_validate(excluded_checks=checks_left_out(case))


def test_enough_cases_were_generated():
    if not cases:
        pytest.skip("run together with test_the_api_keeps_to_its_spec")
    print(f"schemathesis: {len(cases)} cases over {len(set(cases))} operations")
    documented = {f"{method.upper()} {path}" for path, item in spec()["paths"].items()
                  for method in item}  # fmt: skip
    assert set(cases) == documented - {"GET /openapi.json"}  # schemathesis skips the spec itself
    assert len(cases) >= MINIMUM_CASES
