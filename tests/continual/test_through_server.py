"""The same stream learned through `marketplace serve` over HTTP and in process gives the same weights."""

import torch
from safetensors.torch import load as load_bytes

from helpers import tiny_checkpoint

from marketplace.serving import Client, ServerConfig
from marketplace.continual import ContinualLearner
from marketplace.optim import V2
from marketplace.serving.process import ServerProcess
from marketplace.training import load_checkpoint, market_from_checkpoint

K, STEPS = 16, 3


def test_server_with_late_shuffled_labels_learns_what_the_learner_learns(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    g = torch.Generator().manual_seed(1)
    stream = [(torch.randn(K, 1, 28, 28, generator=g), torch.randint(0, 10, (K,), generator=g)) for _ in range(STEPS)]

    market = market_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint), torch.device("cpu"))
    learner = ContinualLearner(V2(market, lr=1e-2, probe_scale=1.0, per_spec=False, decay=0.0, seed=0,
                                  on_nonfinite="skip", attribution=ServerConfig.attribution), records=K, path_seed=0, balanced=False)
    local_paths = [learner.serve(x, labels=y).paths for x, y in stream]

    server = ServerProcess(checkpoint, tmp_path / "store", "--records", K, "--independent").start()
    try:
        with Client(server.url, server.token) as client:
            for step, ((x, y), paths) in enumerate(zip(stream, local_paths)):
                answer = client.predict(x)
                assert answer.step == step and torch.equal(answer.paths, paths)
                order = torch.randperm(K, generator=g).tolist()  # labels come later, shuffled, in two parts
                ids = [answer.ids[i] for i in order]
                first = client.feedback(ids[: K // 2], y[order[: K // 2]])
                assert first["updates"] == 0
                assert client.feedback(ids[K // 2:], y[order[K // 2:]])["updates"] == 1
            response = client._call("GET", "/v1/weights")
            remote = load_bytes(response.content)
            assert client.status()["step"] == STEPS
    finally:
        server.stop()
    assert learner.step == STEPS
    for name, value in market.state_dict().items():
        assert torch.allclose(remote[name], value, atol=1e-6, rtol=0), name
