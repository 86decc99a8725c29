"""Schemathesis over the live /openapi.json: every operation, GET and POST, as the admin, a viewer, a device
and a stranger. No answer may be a 5xx, every answer must be one the document promises (status, content
type, headers, body), and the server's log must hold no error or traceback afterwards.

The server is this module's own, on a database of its own: the fuzzer registers devices and viewers and
sends messages with the admin token, which must not reach other tests' lists, and the log then holds only
the fuzzer's requests. Each identity presents its token where the route takes one: a Bearer token, the
OsmAnd `id` field (and `device_id` of Traccar Client JSON), OwnTracks' Basic password.

Left out of the checks, on purpose: `positive_data_acceptance`, since the document cannot state every
rule (bbox or fence but not both, simplify not with format=csv, a cursor from a previous page, times
between 1970 and 9999), so some schema-valid requests rightly get a 400; and `negative_data_rejection`,
since an empty query value counts as absent and the phone apps' fields are read leniently, so some
schema-invalid requests rightly succeed.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from harness import (
    ADMIN_TOKEN,
    Server,
    add_device,
    add_viewer,
    create_database,
    drop_database,
    now_ms,
    own_server,
    web_client,
    write_rules,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

FLEET = "fuzz-fleet"
DEVICE = "fuzz-van"
FENCE = "fuzz-depot"
STRANGER_TOKEN = "not-a-token-of-this-server"
REAL_IDS = {"/api/devices/": DEVICE, "/api/geofences/": FENCE}  # path prefix -> the id that exists

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
    allow_header_conformance,
]
# The fuzzer tests answers, not overload: a 503 because a busy 2-core machine let the loop lag past the
# default 100 ms would be a false alarm.
NO_OVERLOAD = {"TRACKER_LOOP_LAG_MAX_MS": "600000", "TRACKER_INGEST_MAX_WAIT_MS": "600000"}
RULES = f"""
fences:
  - {{id: {FENCE}, circle: {{center: [13.405, 52.52], radius_m: 300}}}}
rules:
  - {{id: fuzz-arrival, on: enter, fences: [{FENCE}], fleets: [{FLEET}]}}
"""


@dataclass(frozen=True)
class Api:
    """The module's server and the tokens of its accounts: a device of FLEET with a stored trail through
    FENCE, and a viewer of FLEET."""

    server: Server
    device_token: str
    viewer_token: str

    def token(self, who: str) -> str:
        return {
            "admin": ADMIN_TOKEN,
            "viewer": self.viewer_token,
            "device": self.device_token,
            "stranger": STRANGER_TOKEN,
        }[who]


@pytest.fixture(scope="module")
def api(pg_base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    database_url = asyncio.run(create_database(pg_base, "fuzz"))
    tmp = tmp_path_factory.mktemp("fuzz-api")
    write_rules(tmp, RULES)
    try:
        with own_server(database_url, tmp, NO_OVERLOAD) as server:
            yield asyncio.run(_accounts(server))
    finally:
        asyncio.run(drop_database(pg_base, database_url))


async def _accounts(server: Server) -> Api:
    _, device_token = await add_device(server, FLEET, DEVICE)
    viewer_token = await add_viewer(server, [FLEET])
    start = now_ms() // 1000 - 3600
    async with web_client(base_url=server.url) as http:
        for i in range(30):  # a drive into the depot, a stop there, a drive out: trail, stops, trips, events
            lat = 52.50 + min(i, 20) * 0.001 if i < 25 else 52.52 + (i - 24) * 0.002
            r = await http.get(
                "/api/ingest/osmand",
                params={"id": device_token, "lat": lat, "lon": 13.405, "timestamp": start + i * 60},
            )
            assert r.status_code == 200, r.text
    return Api(server, device_token, viewer_token)


@pytest.fixture(params=("admin", "viewer", "stranger"))
def who(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api_schema(api: Api, request: pytest.FixtureRequest) -> schemathesis.BaseSchema:
    """The document as the server serves it, with half the ids in a path those of the module's device or
    fence, so that the routes below them get past the lookup (the other half are the fuzzer's own)."""
    # schemathesis 4.32 renames the test node for its report through `_nodeid`, which pytest 9.2 no
    # longer has; the name is cosmetic, so the attribute it reads only has to exist.
    request.node._nodeid = request.node.nodeid
    schema = schemathesis.openapi.from_url(api.server.url + "/openapi.json")

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[Any]:
        path = context.operation.path
        real = REAL_IDS.get(path.partition("{id}")[0]) if "{id}" in path else None
        if real is None or not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, {**path_parameters, "id": real}])

    return schema


def sign(case: Case[Any], api: Api, who: str) -> dict[str, str]:
    """Put the token of `who` where the operation takes one; return the headers to send with `case`."""
    token = api.token(who)
    if case.operation.path == "/api/ingest/owntracks":
        return {"Authorization": "Basic " + base64.b64encode(f"phone:{token}".encode()).decode()}
    if case.operation.path == "/api/ingest/osmand":
        # The `id` field, in the query or a form body (which wins), or `device_id` of Traccar Client JSON.
        if isinstance(case.query, dict):
            case.query["id"] = token
        for fields in case.body if isinstance(case.body, list) else [case.body]:
            for key in ("id", "device_id"):
                if isinstance(fields, dict) and isinstance(fields.get(key), str):
                    fields[key] = token
        return {}
    return {"Authorization": f"Bearer {token}"}


def call(case: Case[Any], api: Api, who: str) -> None:
    """Send `case` as `who`, check the answer, and check that the server logged no error meanwhile."""
    log_before = api.server.log_size()
    case.call_and_validate(headers=sign(case, api, who), checks=CHECKS, timeout=30)
    assert not api.server.log_error_samples(since=log_before)


api_operations = schemathesis.pytest.from_fixture("api_schema").include(method=["GET", "POST"])
ingest_operations = schemathesis.pytest.from_fixture("api_schema").include(path_regex="^/api/ingest/")
# Derandomized, so a run is the same every time; more examples where a device's fixes are stored, since
# most of what a fuzzer makes up never gets past validation.
FUZZ = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("who")  # schemathesis' wrapper hides the test's own arguments from pytest
@api_operations.parametrize()
@settings(FUZZ, max_examples=25)
def test_every_operation_answers_as_documented(case: Case[Any], api: Api, who: str) -> None:
    call(case, api, who)


@pytest.mark.timeout(180)
@ingest_operations.parametrize()
@settings(FUZZ, max_examples=150)
def test_the_ingest_routes_answer_a_device_as_documented(case: Case[Any], api: Api) -> None:
    call(case, api, "device")


# What the fuzzers found, kept as plain requests.


def test_owntracks_credentials_that_are_not_ascii_are_refused_not_a_crash(api: Api) -> None:
    r = httpx.post(
        api.server.url + "/api/ingest/owntracks",
        content=b"{}",
        headers={b"Authorization": b"Basic \xe9t\xe9"},  # Starlette reads it back as latin-1 text
    )
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Basic realm="tracker"'


def test_a_field_with_a_nul_character_is_stored_without_that_field(api: Api) -> None:
    """PostgreSQL keeps no NUL character in jsonb: the write failed, the apps were told 503 "retry" and
    resent the same request for good."""
    log_before = api.server.log_size()
    basic = base64.b64encode(f"phone:{api.device_token}".encode()).decode()
    ts = now_ms() // 1000 - 3 * 86_400  # a second no fuzzed fix took
    r = httpx.post(
        api.server.url + "/api/ingest/owntracks",
        json={"_type": "location", "lat": 52.5, "lon": 13.4, "tst": ts, "tid": "v7", "note": "a\x00b"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 200, r.text
    r = httpx.get(
        api.server.url + "/api/ingest/osmand",
        params={"id": api.device_token, "lat": 52.5, "lon": 13.4, "timestamp": ts + 1, "x\x00": "1"},
    )
    assert r.status_code == 200, r.text
    r = httpx.get(
        api.server.url + f"/api/devices/{DEVICE}/positions",
        params={"from": (ts - 1) * 1000, "to": (ts + 2) * 1000},
        headers={"Authorization": f"Bearer {api.viewer_token}"},
    )
    assert [f["properties"]["ts"] for f in r.json()["features"]] == [ts * 1000, (ts + 1) * 1000]
    assert not api.server.log_error_samples(since=log_before)


def test_a_device_name_with_a_nul_character_is_refused_naming_it(api: Api) -> None:
    r = httpx.post(
        api.server.url + "/api/admin/devices",
        json={"id": "nul-name", "fleet": FLEET, "name": "van\x007"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("name ")


def test_a_method_a_path_does_not_take_is_answered_with_the_methods_it_does(api: Api) -> None:
    r = httpx.put(api.server.url + "/api/ingest/osmand")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, POST"


def test_the_server_logged_no_error_for_anything_this_module_sent(api: Api) -> None:
    """Last in the module: also what the server logged between requests (each case checks only the lines
    logged while it was answered)."""
    assert not api.server.log_error_samples()
