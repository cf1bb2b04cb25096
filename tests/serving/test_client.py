"""Tests of marketplace.serving.client against a real server: the privacy client's records update as the server would."""

import json

import httpx
import pytest
import torch
from safetensors.torch import load as load_bytes

from helpers import tiny_checkpoint

from marketplace.serving import PrivateClient, ServerConfig
from marketplace.continual import ContinualLearner, per_example_cross_entropy, serve
from marketplace.optim import V2
from marketplace.serving.process import ServerProcess
from marketplace.training import load_checkpoint, market_from_checkpoint

K = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    checkpoint = tiny_checkpoint(root / "tiny.safetensors")
    proc = ServerProcess(checkpoint, root / "store", "--records", K, "--lr", 0.05).start()
    proc.checkpoint = checkpoint
    yield proc
    proc.stop()


def test_private_records_make_the_same_update_as_the_server_computing_the_losses(server):
    sent = []
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                        event_hooks={"request": [lambda r: sent.append((r.method, r.url.path, r.read()))]})
    private = PrivateClient(server.url, http=http, seed=3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(K, 1, 28, 28, generator=g), torch.randint(0, 10, (K,), generator=g)
    step, paths, losses = private.losses(x, y)
    reply = private.report([step] * K, paths, losses)
    assert reply["updates"] == 1 and reply["step"] == step + 1

    # The server's own computation: same market, same seeds, the same paths, its own forward and losses.
    ckpt = load_checkpoint(server.checkpoint)
    learner = ContinualLearner(V2(market_from_checkpoint(ckpt, "tiny", torch.device("cpu")), lr=0.05,
                                  probe_scale=1.0, per_spec=False, seed=0,
                                  attribution=ServerConfig.attribution), records=K)
    assert learner.step == step
    own = per_example_cross_entropy(serve(learner.market, learner.vendors, x, paths=paths).logits, y)
    torch.testing.assert_close(own, losses, rtol=1e-5, atol=1e-6)
    learner.record(own, paths, step)
    served = load_bytes(httpx.get(f"{server.url}/v1/weights", headers={"X-Token": server.token}).content)
    for name, value in learner.market.state_dict().items():
        torch.testing.assert_close(served[name], value, rtol=1e-5, atol=1e-6)

    # Nothing but (step, path, loss) left the client.
    posts = [json.loads(body) for method, path, body in sent if method == "POST"]
    assert len(posts) == 1 and all(set(record) == {"step", "path", "loss"} for record in posts[0])
    assert all(not body for method, _, body in sent if method == "GET")


def test_weights_are_downloaded_once_per_step(server):
    private = PrivateClient(server.url, server.token, seed=1)
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    private.learn(x, y)
    private.learn(x, y)  # the step moved on after the 4th record: one new download
    private.refresh()
    assert private.downloads == 2 and private.info["step"] == private.market()["step"]
