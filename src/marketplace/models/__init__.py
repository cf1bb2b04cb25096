"""Models as lists of specs: the presets, and a user's factory named on the command line.

`build_model(name, specs, input_shape, classes)` is what `marketplace train
--model NAME` calls: NAME is a preset (`PRESETS`) or `MODULE:FACTORY` /
`FILE.py:FACTORY` (see `factory.py`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from torch import nn

from .cnn import NORMS, beautiful_mnist
from .factory import ModelError, as_specs, build_user_model, canonical_source, is_factory_source, split_sequential
from .mlp import mlp
from .resnet import ARCHS, BasicBlock, resnet, resnet_units

MLP_HIDDEN = 128


def _beautiful_mnist(specs, input_shape, classes, norm="instance"):
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ModelError(f"the beautiful-mnist preset reads square images [C, H, H], not {list(input_shape)}")
    if specs not in (1, 2, 3):
        raise ModelError(f"the beautiful-mnist preset splits into 1, 2 or 3 specs, not {specs} (vendors counts)",
                         fields=("vendors",))
    return beautiful_mnist(specs, classes, norm, in_channels=input_shape[0], size=input_shape[1])


def _mlp(specs, input_shape, classes, norm=None):
    return mlp([math.prod(input_shape)] + [MLP_HIDDEN] * (specs - 1) + [classes])


def _resnet(arch):
    def build(specs, input_shape, classes, norm=None):
        if len(input_shape) != 3:
            raise ModelError(f"the {arch} preset reads images [C, H, W], not {list(input_shape)}")
        try:
            return resnet(specs, input_shape[0], classes, arch)
        except ValueError as e:
            raise ModelError(f"{arch}: {e}") from None
    return build


# name -> (specs, input_shape, classes, norm) -> list of specs
PRESETS: dict[str, Callable[..., list[nn.Module]]] = {
    "beautiful-mnist": _beautiful_mnist,
    "mlp": _mlp,
    "resnet": _resnet("resnet8"),
    **{arch: _resnet(arch) for arch in ARCHS},
}


def build_model(name: str, specs: int, input_shape: Sequence[int], classes: int,
                split: Sequence[int] | None = None, norm: str | Callable = "instance") -> list[nn.Module]:
    """The specs of a preset or of a user's factory, for `specs` vendor counts.

    norm applies to the beautiful-mnist preset; split to a factory that returns one nn.Sequential.
    """
    if name in PRESETS:
        if split:
            raise ModelError(f"split cuts a user's nn.Sequential; the {name} preset splits itself", fields=("split",))
        return PRESETS[name](specs, tuple(input_shape), classes, norm=norm)
    if is_factory_source(name):
        return build_user_model(name, input_shape, classes, split, specs)
    raise ModelError(f"unknown model {name!r}: choose a preset ({', '.join(PRESETS)}) "
                     "or name a factory as MODULE:FACTORY or FILE.py:FACTORY")


__all__ = [
    "ARCHS", "BasicBlock", "MLP_HIDDEN", "ModelError", "NORMS", "PRESETS", "as_specs", "beautiful_mnist",
    "build_model", "build_user_model", "canonical_source", "is_factory_source", "mlp", "resnet", "resnet_units",
    "split_sequential",
]
