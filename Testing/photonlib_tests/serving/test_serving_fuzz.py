"""Property-based fuzz of the HTTP API from its own OpenAPI schema (schemathesis), against a
real uvicorn server with a token: no request, valid or not, may get a 5xx answer.

One command, more examples per operation (the default suite runs a few, deterministically)::

    PHOTON_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest Testing/photonlib_tests/serving/test_serving_fuzz.py

``PHOTON_FUZZ_RANDOM=1`` explores new inputs on every run instead of a fixed sequence.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from photonlib.client import PhotonClient
from photonlib.serving.app import create_app
from photonlib.serving.schemas import JOB_ID_PATTERN, VOLUME_ID_PATTERN
from photonlib.serving.server import BackgroundServer
from photonlib.serving.settings import MIB, ServerSettings
from photonlib.wire import RAW_VOLUME_CONTENT_TYPE

from support.serving import TOKEN, ct_array, oblique_geometry, tiny_engine

EXAMPLES = int(os.environ.get("PHOTON_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("PHOTON_FUZZ_RANDOM", "") not in ("", "0")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, ignored_auth]


# Random bytes as the raw volume format too (the server recognises formats from the bytes).
schemathesis.serializer.alias(RAW_VOLUME_CONTENT_TYPE, "application/octet-stream")

# Small limits keep generated questions short; a generous queue keeps 503 (a 5xx) out of the run.
SETTINGS = ServerSettings(token=TOKEN, port=0, max_new_tokens=4, default_max_new_tokens=2, queue_size=1000, max_upload_bytes=4 * MIB)
APP = create_app(tiny_engine(), SETTINGS)
# The schema comes from the application itself (what /openapi.json serves). schemathesis'
# lazy fixture loader does not work with pytest 9 (it sets a removed node attribute).
schema = schemathesis.openapi.from_dict(APP.openapi())


@dataclass(frozen=True)
class FuzzTarget:
    url: str
    volume_id: str  # held by the server, so generated questions reach the worker
    job_id: str  # finished, so generated heatmap and event requests reach real data


@pytest.fixture(scope="module")
def photon_api():
    with BackgroundServer(APP) as server:
        assert requests.get(f"{server.url}/openapi.json", timeout=10).json() == APP.openapi()
        client = PhotonClient(server.url, token=TOKEN)
        geometry = oblique_geometry((20, 18, 10))
        volume_id = client.upload_array(ct_array(geometry), geometry).volume_id
        job_id = client.ask(volume_id, "Seed question", poll_interval=0.01).job_id
        yield FuzzTarget(server.url, volume_id, job_id)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case, photon_api):
    # Generated ids are well-formed but unknown (404); point most of them at real data instead.
    # DELETE keeps its random ids so the shared volume stays.
    parameters = case.path_parameters or {}
    if case.method.upper() != "DELETE":
        for name, known, pattern in (("volume_id", photon_api.volume_id, VOLUME_ID_PATTERN), ("job_id", photon_api.job_id, JOB_ID_PATTERN)):
            if isinstance(parameters.get(name), str) and re.fullmatch(pattern, parameters[name]):
                parameters[name] = known
    case.call_and_validate(base_url=photon_api.url, headers=AUTH, checks=CHECKS, timeout=60)


def test_the_fuzzed_schema_covers_every_route():
    routes = {(operation.method.upper(), operation.path) for operation in (result.ok() for result in schema.get_all_operations())}
    expected = {
        ("GET", "/v1/health"), ("GET", "/v1/info"), ("POST", "/v1/volumes"), ("GET", "/v1/volumes/{volume_id}"),
        ("DELETE", "/v1/volumes/{volume_id}"), ("POST", "/v1/volumes/{volume_id}/questions"), ("POST", "/v1/ask"),
        ("GET", "/v1/jobs/{job_id}"), ("POST", "/v1/jobs/{job_id}/cancel"), ("GET", "/v1/jobs/{job_id}/heatmap"),
        ("GET", "/v1/jobs/{job_id}/events"),
    }  # fmt: skip
    assert expected <= routes
    assert np.all([path.startswith("/v1/") for _, path in routes])
