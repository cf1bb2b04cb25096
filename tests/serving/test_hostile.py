"""Requests a hostile client can send: each gets a short JSON 4xx, the connection stays usable, nothing is stored."""

import pytest
import torch
from fastapi.testclient import TestClient

from marketplace import Market
from marketplace.models import mlp
from marketplace.serving import ServerConfig, create_app, engine_from_market

AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def client(tmp_path):
    torch.manual_seed(0)
    config = ServerConfig(records=4, store=str(tmp_path / "store"), token="t")
    with TestClient(create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,))),
                    raise_server_exceptions=False) as c:
        yield c


def refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:200])
    error = response.json()["error"]
    assert len(error) < 300 and "\n" not in error
    assert all(w in error for w in words), error


def test_deeply_nested_json_is_refused_before_parsing(client):
    deep = b'{"inputs": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    refused(client.post("/v1/predict", content=deep, headers={"Content-Type": "application/json"}), 422, "nested")
    refused(client.post("/v1/feedback", content=b"[" * 1100 + b"]" * 1100, headers=AUTH), 422, "nested")
    brackets_in_a_string = b'{"inputs": [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], "x": "' + b"[" * 50 + b'"}'
    refused(client.post("/v1/predict", content=brackets_in_a_string), 422, "JSON object")  # counted only outside strings


def test_raw_inputs_with_too_many_dimensions(client):
    headers = {"Content-Type": "application/octet-stream", "X-Shape": ",".join(["1"] * 64 + ["6"])}
    refused(client.post("/v1/predict", content=bytes(24), headers=headers), 422, "dimensions")


@pytest.mark.parametrize("value", [2**63, 2**70, -2**63 - 1, -1])
def test_feedback_ids_out_of_range(client, value):
    refused(client.post("/v1/feedback", json=[{"id": value, "label": 1}], headers=AUTH), 422, "id")


@pytest.mark.parametrize("record, where", [
    ({"step": 0, "path": [2**63, 0], "loss": 1.0}, "path"),
    ({"step": 2**64, "path": [0, 0], "loss": 1.0}, "step"),
    ({"step": 0, "path": [0, 0], "loss": 1e300}, "loss"),  # finite in float64, infinite in float32
    ({"step": 0, "path": [0, 0], "loss": "1.0"}, "loss"),  # a string where a number belongs
])
def test_report_values_a_client_cannot_send(client, record, where):
    refused(client.post("/v1/report", json=[record], headers=AUTH), 422, where)
    assert client.get("/v1/status").json()["recorded"] == 0


def test_predict_bodies_must_say_what_they_are(client):
    body = b'{"inputs": [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]}'
    for kind in ("text/plain", "image/png"):
        refused(client.post("/v1/predict", content=body, headers={"Content-Type": kind}), 415, "Content-Type")
    assert client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"}).status_code == 200


def test_unknown_paths_are_not_echoed_back(client):
    response = client.get("/" + "a" * 8000)  # under the URL limit (half of --max-head, 8 KiB)
    refused(response, 404, "no such endpoint")
    assert len(response.content) < 400
    response = client.get("/" + "a" * 60_000)  # httpx refuses URLs over 65,536 characters itself
    refused(response, 414, "URL")
    assert len(response.content) < 400


def test_the_server_answers_after_every_refusal(client):
    for _ in range(3):
        client.post("/v1/feedback", json=[{"id": 2**70, "label": 1}], headers=AUTH)
        assert client.post("/v1/predict", json={"inputs": [[0.1] * 6]}).status_code == 200
