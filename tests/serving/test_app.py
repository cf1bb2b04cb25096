"""The app in process (FastAPI's TestClient, no socket): options that need no real server."""

import torch
from fastapi.testclient import TestClient

from marketplace import Market
from marketplace.models import mlp
from marketplace.serving import ServerConfig, create_app, engine_from_market


def app(tmp_path, **kw):
    torch.manual_seed(0)
    config = ServerConfig(records=4, store=str(tmp_path / "store"), token="t", **kw)
    return create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,)))


def test_protect_predict_requires_the_token_on_predict_too(tmp_path):
    with TestClient(app(tmp_path, protect_predict=True)) as client:
        body = {"inputs": [[0.5] * 6]}
        assert client.post("/v1/predict", json=body).status_code == 401
        answer = client.post("/v1/predict", json=body, headers={"Authorization": "Bearer t"})
        assert answer.status_code == 200 and len(answer.json()["predictions"][0]["probabilities"]) == 3


def test_learning_off_answers_with_the_base_weights_and_refuses_feedback(tmp_path):
    with TestClient(app(tmp_path, learning=False)) as client:
        rows = client.post("/v1/predict", json={"inputs": [[0.1] * 6, [0.2] * 6]}).json()["predictions"]
        assert [r["id"] for r in rows] == [None, None] and all(r["path"] == [0, 0] for r in rows)
        refused = client.post("/v1/feedback", json=[{"id": 0, "label": 1}], headers={"X-Token": "t"})
        assert refused.status_code == 409 and "learning is off" in refused.json()["error"]
        assert client.get("/v1/status").json()["learning"] is False
    assert not (tmp_path / "store").exists()


def test_shutdown_checkpoints_the_learner(tmp_path):
    with TestClient(app(tmp_path)) as client:
        ids = [r["id"] for r in client.post("/v1/predict", json={"inputs": [[0.1] * 6] * 4}).json()["predictions"]]
        assert client.post("/v1/feedback", json=[{"id": i, "label": i % 3} for i in ids],
                           headers={"X-Token": "t"}).json()["updates"] == 1
    assert (tmp_path / "store" / "learner.safetensors").exists()


def test_a_private_client_reports_differences_to_a_server_with_a_baseline(tmp_path):
    from marketplace.serving import PrivateClient
    from marketplace.continual import per_example_cross_entropy, serve

    with TestClient(app(tmp_path, baseline=True), headers={"X-Token": "t"}) as http:
        private = PrivateClient(http=http, specs=mlp([6, 5, 3]))
        x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
        step, paths, losses = private.losses(x, y)
        assert private.info["baseline"] is True
        own = per_example_cross_entropy(serve(private.local, private.vendors, x, paths=paths).logits, y)
        torch.testing.assert_close(losses, own - per_example_cross_entropy(private.local(x).detach(), y))
        assert private.report([step] * 4, paths, losses)["updates"] == 1
