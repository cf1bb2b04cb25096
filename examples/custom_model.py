"""Your own model on the command line: a factory that returns the specs.

    uv run marketplace train --model examples/custom_model.py:build --vendors 4,4,4,4 --steps 300
    uv run marketplace train --model examples.custom_model:build --dataset fashion-mnist --vendors 4,4,4,4 --steps 300
    uv run marketplace train --model examples/custom_model.py:build_sequential --split 3,6,8 --vendors 4,4,1,4 --steps 300

`build` receives `input_shape` (one example, e.g. (1, 28, 28)) and `classes`
because it declares them; a factory without arguments is called without any.
Any module whose forward depends only on its parameters and its input is a
spec: GroupNorm, LayerNorm, Dropout (each vendor draws its own mask), a
residual block. BatchNorm is refused (its running statistics would mix the
vendors); a spec without parameters takes one vendor (the 1 in 4,4,1,4: the
pooling between cuts 6 and 8 of `build_sequential`).
"""

from torch import nn


class Residual(nn.Module):
    """x + GELU(GroupNorm(Conv(x))): a block of constant shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels), nn.GELU())

    def forward(self, x):
        return x + self.body(x)


def build(input_shape=(1, 28, 28), classes=10) -> list[nn.Module]:
    """Four specs: a strided stem, a residual block, a downsampling block, and an MLP head with dropout."""
    c, h, w = input_shape
    return [
        nn.Sequential(nn.Conv2d(c, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.GELU()),
        Residual(16),
        nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32), nn.GELU(), nn.AdaptiveAvgPool2d(4)),
        nn.Sequential(nn.Flatten(), nn.LayerNorm(32 * 16), nn.Dropout(0.1), nn.Linear(32 * 16, classes)),
    ]


def build_sequential() -> nn.Sequential:
    """The same idea as one nn.Sequential, cut into specs by `--split 3,6,8` (for 1x28x28 inputs)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.GELU(),      # spec 0: layers 0-2
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32), nn.GELU(),     # spec 1: layers 3-5
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),                                         # spec 2: layers 6-7
        nn.Linear(32 * 16, 10),                                                        # spec 3: layer 8
    )
