"""Property-based fuzzing of every endpoint: whatever a client sends, no 5xx, a JSON error, a server that still answers.

Bodies are drawn from hypothesis strategies shaped like the endpoints'
records (with every field also able to take any JSON value, huge integers,
non-finite floats and strings), headers from valid and invalid ones. After
every request the server must answer /v1/status, and what its learner
counted must equal what its store holds. The budget is bounded (examples per
endpoint below), so the test stays a few seconds in CI.
"""

import json

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace import Market
from marketplace.models import mlp
from marketplace.serving import ServerConfig, create_app, engine_from_market

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = (st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=24)
small_ints = st.integers(-3, 12) | st.integers(-2**70, 2**70)


def record(fields: dict) -> st.SearchStrategy:
    """A record with the endpoint's fields (plausible or any JSON value), sometimes a field missing or extra."""
    parts = {name: strategy | json_values for name, strategy in fields.items()}
    return st.fixed_dictionaries(parts, optional={"extra": json_values})


feedback_bodies = st.lists(record({"id": small_ints, "label": small_ints}), max_size=6)
report_bodies = st.lists(record({"step": small_ints, "path": st.lists(small_ints, max_size=4),
                                 "loss": st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4)}),
                         max_size=6)
predict_inputs = st.lists(st.lists(st.floats(-10, 10) | scalars, min_size=0, max_size=7), max_size=3) | json_values
content_types = st.sampled_from(["application/json", "application/octet-stream", "text/plain", "", "image/png",
                                 "application/json; charset=utf-8"])
tokens = st.sampled_from(["Bearer t", "Bearer wrong", "", "t"])
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=16)  # what HTTP carries


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("fuzz")
    config = ServerConfig(records=4, store=str(root / "store"), token="t", max_request=8, max_records=16)
    app = create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,)))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def check(client, response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and "\n" not in body["error"] and len(body["error"]) < 1000
    status = client.get("/v1/status")
    assert status.status_code == 200
    counts = status.json()
    assert counts["recorded"] + counts["stale"] == counts["stored_records"]  # each stored record counted once


@FUZZ
@given(body=feedback_bodies, token=tokens, kind=content_types)
def test_feedback(server, body, token, kind):
    check(server, server.post("/v1/feedback", content=json.dumps(body).encode(),
                              headers={"Authorization": token, "Content-Type": kind}))


@FUZZ
@given(body=report_bodies, token=tokens)
def test_report(server, body, token):
    check(server, server.post("/v1/report", content=json.dumps(body, allow_nan=True).encode(),
                              headers={"Authorization": token}))


@FUZZ
@given(inputs=predict_inputs, kind=content_types, shape=header_text | st.just("1,6") | st.just("2,6"),
       dtype=header_text | st.sampled_from(["uint8", "float32"]),
       raw=st.binary(max_size=200))
def test_predict(server, inputs, kind, shape, dtype, raw):
    body = raw if kind == "application/octet-stream" else json.dumps({"inputs": inputs}, allow_nan=True).encode()
    check(server, server.post("/v1/predict", content=body,
                              headers={"Content-Type": kind, "X-Shape": shape, "X-Dtype": dtype}))


@FUZZ
@given(body=st.binary(max_size=300), path=st.sampled_from(["/v1/predict", "/v1/feedback", "/v1/report",
                                                            "/v1/admin/checkpoint", "/v1/nothing"]))
def test_any_bytes_anywhere(server, body, path):
    check(server, server.post(path, content=body, headers={"Authorization": "Bearer t"}))


def test_the_fuzzed_server_still_learns(server):
    rows = server.post("/v1/predict", json={"inputs": [[0.1] * 6] * 4}).json()["predictions"]
    before = server.get("/v1/status").json()["updates"]
    done = server.post("/v1/feedback", json=[{"id": r["id"], "label": 1} for r in rows],
                       headers={"Authorization": "Bearer t"})
    assert done.status_code == 200 and server.get("/v1/status").json()["updates"] >= before
