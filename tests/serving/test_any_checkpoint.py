"""`marketplace serve` rebuilds any checkpoint's model from its record, and so does a privacy client.

Three checkpoints trained for one step on a user's `.npz` of 3x8x8 uint8
images (not MNIST's 1x28x28): a ResNet, a user's factory from a file, and
the MLP preset (the default CNN needs at least 20x20). Each is served over HTTP on 127.0.0.1; a `PrivateClient`
without specs rebuilds the market from the record the server hands out
and computes exactly the server's answers along the same paths.
"""

import numpy as np
import pytest
import torch

from marketplace.continual import serve
from marketplace.errors import MarketplaceError
from marketplace.market import Market
from marketplace.serving import Client, PrivateClient, ServerConfig, engine_from_checkpoint, specs_of
from marketplace.serving.process import ServerProcess
from marketplace.training import TrainConfig, train

FACTORY = '''
import math
from torch import nn


def build(input_shape, classes):
    return [nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU()), nn.Linear(16, classes)]
'''

MODELS = {"resnet": ("resnet", (2, 2, 2, 2)), "factory": ("{tmp}/factory.py:build", (2, 2)),
          "mlp": ("mlp", (2, 2, 2))}
CLASSES = 3


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """3x8x8 uint8 images, 3 classes: 48 training and 16 test examples."""
    root = tmp_path_factory.mktemp("any")
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES, 64)
    x = np.clip(rng.normal(100, 40, size=(64, 3, 8, 8)) + 30 * y[:, None, None, None], 0, 255).astype(np.uint8)
    np.savez(root / "images.npz", x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    (root / "factory.py").write_text(FACTORY)
    return root


@pytest.fixture(scope="module")
def checkpoints(npz):
    """name -> a one-step `marketplace train` checkpoint of that model on the .npz file."""
    out = {}
    for name, (model, vendors) in MODELS.items():
        out[name] = npz / f"{name}.safetensors"
        train(TrainConfig(model=model.format(tmp=npz), data=str(npz / "images.npz"), vendors=vendors, steps=1,
                          batch=8, checkpoint=str(out[name])))
    return out


def pixels(x: torch.Tensor, train: np.ndarray) -> torch.Tensor:
    """uint8 images normalised as `marketplace train` normalised the .npz file."""
    scaled = torch.from_numpy(train).float() / 255.0
    return (x.float() / 255.0 - float(scaled.mean())) / float(scaled.std())


@pytest.mark.parametrize("name", list(MODELS))
def test_a_checkpoint_of_another_input_shape_is_served_and_a_private_client_rebuilds_it(name, checkpoints, npz,
                                                                                         tmp_path):
    x = torch.from_numpy(np.load(npz / "images.npz")["x_test"][:5])  # uint8 [5, 3, 8, 8]
    train = np.load(npz / "images.npz")["x_train"]
    with ServerProcess(checkpoints[name], tmp_path / "store", "--records", 4) as server:
        client = Client(server.url, server.token)
        answer = client.predict(x)  # pixels, normalised by the server as in training
        floats = client.predict(pixels(x, train))
        assert answer.probabilities.shape == (5, CLASSES) and floats.probabilities.shape == (5, CLASSES)

        private = PrivateClient(server.url, server.token)
        info = private.refresh()
        record = info["model"]
        assert record["input_shape"] == [3, 8, 8] and record["classes"] == CLASSES
        assert record["source"] == MODELS[name][0].format(tmp=npz.resolve()) and "preset" not in record
        assert info["step"] == answer.step == floats.step  # no update yet: the same seeds
        for sent, got in ((pixels(x, train), answer), (pixels(x, train), floats)):
            mine = serve(private.local, private.vendors, sent, paths=got.paths).logits
            torch.testing.assert_close(torch.softmax(mine, -1), got.probabilities, rtol=1e-4, atol=1e-5)
        step, paths, losses = private.losses(pixels(x, train)[:4], torch.tensor([0, 1, 2, 0]))
        assert private.report([step] * 4, paths, losses)["updates"] == 1
        client.close()
        private.close()


def test_a_widened_head_is_rebuilt_by_the_client(checkpoints, tmp_path):
    engine = engine_from_checkpoint(checkpoints["factory"], ServerConfig(token="t", classes=5, learning=False,
                                                                         store=str(tmp_path / "s")))
    assert engine.input_shape == (3, 8, 8) and engine.model["served_classes"] == 5
    rebuilt = Market(specs_of(engine.model), list(engine.market.vendor_counts))
    rebuilt.load_state_dict(engine.market.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(rebuilt(x), engine.market(x))


def test_a_description_in_the_older_preset_form_still_rebuilds():
    specs = specs_of({"preset": "beautiful_mnist", "depth": 3, "classes": 10, "norm": "instance", "batch": 128})
    assert Market(specs, [1, 1, 1])(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_model_the_client_cannot_rebuild_is_one_line_that_names_specs(tmp_path):
    record = {"source": f"{tmp_path}/gone.py:build", "depth": 2, "input_shape": [3, 8, 8], "classes": 3}
    with pytest.raises(MarketplaceError, match="pass specs= to the client") as info:
        specs_of(record)
    assert "\n" not in str(info.value)
