"""`marketplace serve` over real HTTP (uvicorn in a subprocess on 127.0.0.1): round trips, tokens, bad input."""

import json

import httpx
import pytest
import torch
from safetensors.torch import load as load_bytes

from helpers import tiny_checkpoint

from marketplace.serving import Client, ServerError
from marketplace.serving.process import ServerProcess

K = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    proc = ServerProcess(tiny_checkpoint(root / "tiny.safetensors"), root / "store", "--records", K,
                         "--max-request", 16, "--max-body", 200_000).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(server):
    with Client(server.url, server.token) as c:
        yield c


def test_predict_then_feedback_makes_an_update(server, client):
    before = client.status()
    x = torch.randn(3, 1, 28, 28)
    answer = client.predict(x)
    assert len(set(answer.ids)) == 3 and answer.probabilities.shape == (3, 10) and answer.paths.shape == (3, 3)
    assert torch.allclose(answer.probabilities.sum(1), torch.ones(3), atol=1e-5)
    assert torch.equal(answer.classes, answer.probabilities.argmax(1))
    pixels = client.predict(torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8))  # raw uint8 pixels
    reply = client.feedback(answer.ids + pixels.ids, [1, 2, 3, 4])
    assert reply["stored"] == 4 and reply["recorded"] + reply["stale"] == 4
    after = client.status()
    assert after["served"] - before["served"] == 4
    assert after["recorded"] + after["stale"] - before["recorded"] - before["stale"] == 4
    assert after["step"] == before["step"] + (reply["recorded"] + before["records_waiting"]) // K


def test_json_inputs_flat_or_shaped_are_served(server):
    x = torch.randn(2, 784)  # flat inputs with the right count per example are accepted
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert [len(p["probabilities"]) for p in rows] == [10, 10] and all(isinstance(p["id"], int) for p in rows)


def test_feedback_report_and_admin_need_the_token(server):
    for method, path in [("POST", "/v1/feedback"), ("POST", "/v1/report"), ("GET", "/v1/market"),
                         ("GET", "/v1/weights"), ("POST", "/v1/admin/checkpoint")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Token": "test-token-but-longer"}):
            r = httpx.request(method, f"{server.url}{path}", json=[], headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert "token" in r.json()["error"]
    ok = httpx.post(f"{server.url}/v1/admin/checkpoint", headers={"X-Token": server.token})
    assert ok.status_code == 200 and ok.json()["path"].endswith("learner.safetensors")


RAW = {"Content-Type": "application/octet-stream"}
BAD = {
    "wrong shape": dict(json={"inputs": [[1.0, 2.0]]}),
    "ragged": dict(json={"inputs": [[1.0, 2.0], [3.0]]}),
    "not numbers": dict(json={"inputs": [["a"] * 784]}),
    "empty batch": dict(json={"inputs": []}),
    "NaN": dict(content=b'{"inputs": [[NaN' + b", 0" * 783 + b"]]}"),
    "infinity": dict(content=b'{"inputs": [[Infinity' + b", 0" * 783 + b"]]}"),
    "not JSON": dict(content=b"{inputs"),
    "extra key": dict(json={"inputs": [[0.0] * 784], "x": 1}),
    "over the batch limit": dict(json={"inputs": [[0.0] * 784] * 17}),
    "raw without shape": dict(content=bytes(784), headers={**RAW, "X-Dtype": "uint8"}),
    "raw bad shape": dict(content=bytes(784), headers={**RAW, "X-Dtype": "uint8", "X-Shape": "1,a"}),
    "raw wrong length": dict(content=bytes(700), headers={**RAW, "X-Dtype": "uint8", "X-Shape": "1,1,28,28"}),
    "raw bad dtype": dict(content=bytes(784), headers={**RAW, "X-Dtype": "int64", "X-Shape": "1,1,28,28"}),
    "oversized body": dict(content=bytes(300_000), headers={**RAW, "X-Dtype": "uint8", "X-Shape": "1,1,28,28"}),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_predict_input_is_a_one_line_4xx_and_the_server_keeps_serving(server, case):
    r = httpx.post(f"{server.url}/v1/predict", **BAD[case])
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    message = r.json()["error"]
    assert message and "\n" not in message
    assert httpx.get(f"{server.url}/v1/status").status_code == 200


def test_bad_feedback_and_reports_are_4xx(server, client):
    ids = client.predict(torch.zeros(2, 1, 28, 28)).ids
    auth = {"X-Token": server.token}
    step = client.status()["step"]
    cases = [("/v1/feedback", [{"id": 10**9, "label": 1}], 404), ("/v1/feedback", [{"id": ids[0], "label": 10}], 422),
             ("/v1/feedback", [{"id": ids[0], "label": -1}], 422), ("/v1/feedback", [{"id": ids[0]}], 422),
             ("/v1/feedback", [{"id": ids[0], "label": 1}] * 2, 409), ("/v1/feedback", [], 422),
             ("/v1/feedback", {"id": ids[0], "label": 1}, 422), ("/v1/feedback", [{"id": "x", "label": 1}], 422),
             ("/v1/report", [{"step": step + 5, "path": [0, 0, 0], "loss": 1.0}], 422),
             ("/v1/report", [{"step": step, "path": [0, 0], "loss": 1.0}], 422),
             ("/v1/report", [{"step": step, "path": [0, 0, 2], "loss": 1.0}], 422)]
    for path, body, status in cases:
        r = httpx.post(f"{server.url}{path}", json=body, headers=auth)
        assert r.status_code == status, (body, r.text)
        assert "\n" not in r.json()["error"]
    nan = httpx.post(f"{server.url}/v1/report", headers={**auth, "Content-Type": "application/json"},
                     content=json.dumps([{"step": step, "path": [0, 0, 0], "loss": float("nan")}]))
    assert nan.status_code == 422
    assert client.feedback(ids, [0, 1])["stored"] == 2  # nothing above was stored: these still can be


def test_weights_are_cached_per_step_with_an_etag(server, client):
    auth = {"X-Token": server.token}
    r = httpx.get(f"{server.url}/v1/weights", headers=auth)
    assert r.status_code == 200
    state = load_bytes(r.content)
    info = client.market()
    assert r.headers["etag"] == f'"{info["version"]}"' and info["version"].endswith(f"-{info['step']}")
    assert set(state) and all(k.startswith("specs.") for k in state)
    again = httpx.get(f"{server.url}/v1/weights", headers={**auth, "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_status_and_prometheus_metrics(server, client):
    client.predict(torch.zeros(1, 1, 28, 28))
    status = client.status()
    for key in ("step", "records_waiting", "served", "recorded", "stale", "updates", "uptime_s"):
        assert key in status
    text = httpx.get(f"{server.url}/metrics").text
    assert 'marketplace_requests_total{endpoint="/v1/predict",status="200"}' in text
    assert "marketplace_batch_size_bucket" in text
    served = [line for line in text.splitlines() if line.startswith("marketplace_served_total ")]
    assert len(served) == 1 and int(served[0].split()[1]) >= status["served"] > 0
    assert httpx.get(f"{server.url}/nowhere").status_code == 404


def test_a_url_over_the_head_limit_is_a_json_414(server):
    r = httpx.get(f"{server.url}/v1/status?{'q' * 20_000}")  # over the default 16 KiB head (the URL alone: 8 KiB)
    assert r.status_code == 414 and "URL" in r.json()["error"] and len(r.content) < 200
    assert httpx.get(f"{server.url}/v1/status").status_code == 200


def test_the_server_listens_on_loopback_by_default(server):
    """No --host given: the listening socket is bound to 127.0.0.1 (read from /proc/net/tcp)."""
    from pathlib import Path

    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("no /proc/net/tcp on this system")
    listening = [line.split()[1] for line in table.read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == server.port]
    assert listening == [f"0100007F:{server.port:04X}"]


def test_client_errors_carry_the_status_and_the_servers_line(server):
    with pytest.raises(ServerError) as info:
        Client(server.url, "wrong").feedback([0], [0])
    assert info.value.status == 401 and "token" in str(info.value)
