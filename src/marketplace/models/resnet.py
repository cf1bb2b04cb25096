"""GroupNorm ResNets for small images, split into specs at block boundaries.

BatchNorm is replaced by GroupNorm (a market refuses running statistics,
docs/algorithm.md section 9). The CIFAR-style stem (one 3x3 conv, no max-pool)
suits 28x28 and 32x32 inputs. Architectures, by their count of weighted
layers: resnet8 (3 stages x 1 basic block, 16-32-64 channels, ~78k
parameters: the CPU size), resnet20 (3 x 3 blocks, ~270k), resnet18 (4 x 2
blocks, 64-128-256-512 channels, ~11M: the GPU size).
"""

from __future__ import annotations

import math

from torch import nn

ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {  # name -> (blocks per stage, channels per stage)
    "resnet8": ((1, 1, 1), (16, 32, 64)),
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
}


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with groups of (at least) 2 channels, at most 32 groups."""
    return nn.GroupNorm(math.gcd(32, max(1, channels // 2)), channels)


class BasicBlock(nn.Module):
    """conv3x3-GN-ReLU-conv3x3-GN plus the shortcut (1x1 conv + GN when the shape changes), then ReLU.

    x: [B, c_in, H, W] -> [B, c_out, H / stride, W / stride].
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), group_norm(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), group_norm(c_out),
        )
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), group_norm(c_out))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def resnet_units(arch: str = "resnet8", in_channels: int = 1, classes: int = 10) -> list[nn.Module]:
    """The model as consecutive units: [stem, block, ..., block, head]."""
    if arch not in ARCHS:
        raise ValueError(f"unknown ResNet {arch!r}; choose from {', '.join(ARCHS)}")
    blocks, widths = ARCHS[arch]
    units: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                            group_norm(widths[0]), nn.ReLU())]
    c = widths[0]
    for stage, (n, width) in enumerate(zip(blocks, widths)):
        for i in range(n):
            units.append(BasicBlock(c, width, stride=2 if stage > 0 and i == 0 else 1))
            c = width
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)))
    return units


def split_units(units: list[nn.Module], specs: int) -> list[list[nn.Module]]:
    """Group [stem, blocks..., head] into `specs` consecutive specs.

    The blocks are spread evenly (earlier specs take the remainder), the stem
    joins the first and the head the last; with one more spec than blocks the
    head stands alone, with two more the stem too.
    """
    stem, blocks, head = units[0], units[1:-1], units[-1]
    if not 1 <= specs <= len(blocks) + 2:
        raise ValueError(f"this ResNet has {len(blocks)} blocks: split it into 1 to {len(blocks) + 2} specs, not {specs}")
    alone = max(0, specs - len(blocks))  # 1: the head alone, 2: the stem too
    groups_of_blocks = specs - alone
    size, extra = divmod(len(blocks), groups_of_blocks)
    groups, start = [], 0
    for g in range(groups_of_blocks):
        end = start + size + (g < extra)
        groups.append(list(blocks[start:end]))
        start = end
    groups = ([[stem]] if alone == 2 else [[stem] + groups.pop(0)]) + groups
    if alone >= 1:
        groups.append([head])
    else:
        groups[-1].append(head)
    return groups


def resnet(specs: int = 4, in_channels: int = 1, classes: int = 10, arch: str = "resnet8") -> list[nn.Module]:
    """A GroupNorm ResNet split into `specs` specs (each an `nn.Sequential` of units).

    resnet(4) for Fashion-MNIST: [stem + block 1], [block 2], [block 3], [pool + linear].
    The initial weights depend on the seed only, not on the split.
    """
    return [nn.Sequential(*group) for group in split_units(resnet_units(arch, in_channels, classes), specs)]
