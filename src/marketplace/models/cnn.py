"""The beautiful-MNIST CNN of docs/algorithm.md section 9, split into 1 to 3 specs."""

from __future__ import annotations

from typing import Callable

from torch import nn

# Normalisation layers by name; `beautiful_mnist(norm=...)` also takes any `channels -> module`.
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "batch": nn.BatchNorm2d,  # for backprop baselines only: a Market refuses it (section 9)
}


def _block(c_in: int, c_out: int, kernel: int, norm: Callable[[int], nn.Module],
           flatten: bool = False) -> list[nn.Module]:
    """Conv, ReLU, Conv, ReLU, norm, MaxPool: one stage of the beautiful-MNIST CNN."""
    layers = [
        nn.Conv2d(c_in, c_out, kernel), nn.ReLU(),
        nn.Conv2d(c_out, c_out, kernel), nn.ReLU(),
        norm(c_out), nn.MaxPool2d(2),
    ]
    return layers + [nn.Flatten()] if flatten else layers


def beautiful_mnist(depth: int = 3, classes: int = 10,
                    norm: str | Callable[[int], nn.Module] = "instance",
                    in_channels: int = 1, size: int = 28) -> list[nn.Module]:
    """The CNN of docs/algorithm.md section 9 for in_channels x size x size inputs, split into `depth` specs.

    depth 3: [conv stage 1], [conv stage 2 + flatten], [linear] (the published market);
    depth 2: [conv stage 1], [conv stage 2 + linear]; depth 1: the whole model
    as one spec (the "all at once" baseline). norm: "instance" (the published
    market), "batch" (the original backprop model), or a `channels -> module`
    factory. The initial weights depend on the seed only, not on the depth.
    The published model reads 1x28x28 (the defaults); 3x32x32 (CIFAR-10) works too.
    """
    if isinstance(norm, str):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)} or pass a factory")
        norm = NORMS[norm]
    side = ((size - 8) // 2 - 4) // 2  # two 5x5 convs, pool, two 3x3 convs, pool
    if side < 1:
        raise ValueError(f"the beautiful-MNIST CNN needs images of at least 20x20, not {size}x{size}")
    stage1 = _block(in_channels, 32, 5, norm)
    stage2 = _block(32, 64, 3, norm, flatten=True)
    head = [nn.Linear(64 * side * side, classes)]
    splits = {1: [stage1 + stage2 + head], 2: [stage1, stage2 + head], 3: [stage1, stage2, head]}
    if depth not in splits:
        raise ValueError(f"the beautiful-MNIST CNN splits into 1, 2 or 3 specs, not {depth}")
    return [nn.Sequential(*layers) for layers in splits[depth]]
