"""`market_from_checkpoint` rebuilds presets and users' factories from the checkpoint's model record."""

import pytest
import torch

from marketplace.training import TrainConfig, build_market, market_from_checkpoint
from marketplace.training.checkpoint import Checkpoint, CheckpointError
from marketplace.training.loop import model_record


def test_a_checkpoint_without_a_model_record_holds_the_beautiful_mnist_cnn():
    market = build_market(TrainConfig(vendors=(2, 2, 2), seed=3), torch.device("cpu"))
    ckpt = Checkpoint(market.state_dict(), {}, {"config": {"vendors": [2, 2, 2]}})  # as 0.2 wrote them
    rebuilt = market_from_checkpoint(ckpt, "old.safetensors", torch.device("cpu"))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), market(x))


@pytest.mark.parametrize("model,vendors,shape", [("resnet", (2, 2, 2, 2), (3, 12, 12)), ("mlp", (2, 2), (5,))])
def test_presets_are_rebuilt_from_their_record(model, vendors, shape):
    config = TrainConfig(model=model, vendors=vendors, seed=1)
    market = build_market(config, torch.device("cpu"), shape, 4)
    with torch.no_grad():
        for p in market.parameters():
            p.add_(0.01)  # trained weights, not the seed's
    meta = {"config": {"vendors": list(vendors), "model": model}, "model": model_record(config, shape, 4)}
    rebuilt = market_from_checkpoint(Checkpoint(market.state_dict(), {}, meta), "c", torch.device("cpu"))
    x = torch.randn(2, *shape)
    torch.testing.assert_close(rebuilt(x), market(x))


def test_a_record_that_does_not_fit_the_weights_is_one_line():
    market = build_market(TrainConfig(model="mlp", vendors=(2, 2)), torch.device("cpu"), (5,), 4)
    meta = {"config": {"vendors": [2, 2]}, "model": {"source": "mlp", "input_shape": [6], "classes": 4}}
    with pytest.raises(CheckpointError, match="does not hold the mlp market it names"):
        market_from_checkpoint(Checkpoint(market.state_dict(), {}, meta), "c", torch.device("cpu"))


def test_a_market_is_built_for_the_configs_own_data_unless_told_otherwise(tmp_path):
    """No fixed MNIST shape: a CIFAR-10 config gets 3x32x32 inputs, a user's file its own shape and classes."""
    import numpy as np

    cifar = build_market(TrainConfig(dataset="cifar10", vendors=(2, 2, 2)), torch.device("cpu"))
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    npz = tmp_path / "x.npz"
    x, y = np.zeros((6, 1, 12, 12), np.float32), np.array([0, 1, 2, 3, 4, 0])
    np.savez(npz, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    config = TrainConfig(data=str(npz), model="mlp", vendors=(2, 2))
    assert build_market(config, torch.device("cpu"))(torch.randn(2, 1, 12, 12)).shape == (2, 5)
    assert model_record(config, (1, 12, 12), 5)["input_shape"] == [1, 12, 12]
