"""Batched vendor layouts: the ways to run one spec under all its vendors' weights at once (same result, other speed).

`Market.evaluate` hands a spec its vendors' stacked weights {name: [M, *shape]}
and either one input that every vendor reads (spec 0, and every spec under
full sampling) or one input per vendor (partial sampling). How that batch is
laid out is a speed question only, so it is an option (`Market(formulation=)`):

- "vmap": `vmap(functional_call)` over the stacked weights. Runs any spec;
  torch's batching rules add reshuffles around norms and pooling.
- "grouped": the vendors folded into the channels, [N, M * C, H, W]: a
  convolution is one grouped convolution (M groups), an instance norm one
  norm over M * C channels, a linear layer one batched matmul. A shared input
  is first copied M times.
- "wide": as "grouped", but a shared input is never copied: the
  parameter-free layers before its first weighted one (activations,
  pooling, flattening) run once, that layer (a convolution or a linear
  layer) is one wide layer of M * O outputs that every vendor reads, and
  the layers after it are grouped. A head that pools before its linear
  layer thus pools once, not once per vendor.

Any module the grouped layout has no rule for sends that spec back to vmap,
so an unknown layer is slower, never wrong. `serving.serve` uses the same
grouped layers for random-path inference.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .errors import UnsupportedLayout

FORMULATIONS = ("auto", "vmap", "grouped", "wide")

# The formulation "auto" picks, per device type: measured on the CPU (benchmarks/results/
# formulations_cpu.md); on CUDA the wide route until a GPU run says otherwise.
AUTO = {"cpu": "wide", "cuda": "wide"}


def resolve(formulation: str, device: torch.device) -> str:
    """The concrete formulation for `device` ("auto" looks up AUTO, vmap where unlisted)."""
    return AUTO.get(device.type, "vmap") if formulation == "auto" else formulation


Unsupported = UnsupportedLayout  # the old name

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
                nn.Softplus, nn.Identity)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The layers of nested Sequentials in order, with their parameter-name prefixes."""
    if isinstance(module, nn.Sequential):
        return [leaf for name, child in module.named_children() for leaf in _leaves(child, f"{prefix}{name}.")]
    return [(prefix, module)]


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_plan(spec: nn.Module) -> list[tuple[nn.Module, dict[str, str]]]:
    """The spec's layers, each with {its parameter name: the spec's name for it} (tied weights: the first).

    Walking the parameters costs more than a small layer does, and a server
    runs a spec many times a second, so the plan is kept per spec, rebuilt
    when its modules change (a replaced head, a widened layer).
    """
    key = tuple(map(id, spec.modules()))
    cached = _PLANS.get(spec)
    if cached is not None and cached[0] == key:
        return cached[1]
    names = {id(p): n for n, p in spec.named_parameters()}
    plan = [(mod, {n: names[id(p)] for n, p in mod.named_parameters(recurse=False)}) for _, mod in _leaves(spec)]
    _PLANS[spec] = (key, plan)
    return plan


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, nn.InstanceNorm2d):
        return not module.track_running_stats
    if isinstance(module, nn.Flatten):
        return module.end_dim == -1 and module.start_dim >= 1
    return isinstance(module, (nn.Linear, *_POOLS, *_ELEMENTWISE))


def expressible(spec: nn.Module) -> bool:
    """Whether every layer of `spec` has a grouped rule (else the spec runs through vmap)."""
    return all(_supported(m) for _, m in _leaves(spec))


def grouped_layer(module: nn.Module, own: dict[str, torch.Tensor], h: torch.Tensor,
                  channels_last: bool = False, owned: bool = False) -> torch.Tensor:
    """One layer, every vendor on its own slice: h [G, M, *features] -> [G, M, *out].

    own: the layer's stacked vendor weights {name: [M, *shape]}. owned: h was
    made inside this spec, so a ReLU may overwrite it instead of allocating
    another tensor of the same size (the step's largest).
    """
    g, m = h.shape[:2]
    merged = lambda t: t.reshape(g, m * t.shape[2], *t.shape[3:])  # [G, M*C, H, W]
    split = lambda t: t.view(g, m, -1, *t.shape[2:])  # back to [G, M, C, H, W]
    if isinstance(module, nn.Conv2d) and h.dim() == 5:
        w, b = own["weight"], own.get("bias")  # [M, O, C/groups, kh, kw], [M, O]
        x = merged(h)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                     module.stride, module.padding, module.dilation, module.groups * m)
        return split(y)
    if isinstance(module, nn.InstanceNorm2d) and h.dim() == 5:
        w, b = own.get("weight"), own.get("bias")  # [M, C]
        y = F.instance_norm(merged(h), weight=None if w is None else w.reshape(-1),
                            bias=None if b is None else b.reshape(-1), eps=module.eps)
        return y.view(h.shape)
    if isinstance(module, _POOLS) and h.dim() == 5:
        return split(module(merged(h)))
    if isinstance(module, nn.Linear):
        w, b = own["weight"], own.get("bias")  # [M, O, F], [M, O]
        y = torch.einsum("gm...f,mof->gm...o", h, w)
        if b is not None:
            y = y + b.view(1, m, *([1] * (y.dim() - 3)), -1).to(y.dtype)
        return y
    if isinstance(module, nn.Flatten):
        return h.flatten(module.start_dim + 1)
    if isinstance(module, nn.ReLU) and owned:
        return F.relu(h, inplace=True)
    if isinstance(module, _ELEMENTWISE):
        return module(h)
    raise UnsupportedLayout(type(module).__name__)


def wide_layer(module: nn.Module, own: dict[str, torch.Tensor], x: torch.Tensor,
               channels_last: bool = False) -> torch.Tensor | None:
    """A first layer that every vendor reads: x [N, *features] -> [N, M, *out], or None if it is no such layer."""
    if isinstance(module, nn.Conv2d) and module.groups == 1 and x.dim() == 4:
        w, b = own["weight"], own.get("bias")  # [M, O, C, kh, kw]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                     module.stride, module.padding, module.dilation)  # [N, M*O, H, W]
        return y.view(y.shape[0], w.shape[0], -1, *y.shape[2:])
    if isinstance(module, nn.Linear) and x.dim() == 2:
        w, b = own["weight"], own.get("bias")  # [M, O, F]
        y = F.linear(x, w.reshape(-1, w.shape[-1]), None if b is None else b.reshape(-1))  # [N, M*O]
        return y.view(x.shape[0], w.shape[0], -1)
    return None


def grouped_spec(spec: nn.Module, params: dict[str, torch.Tensor], inp: torch.Tensor, shared: bool,
                 wide: bool = False, channels_last: bool = False) -> torch.Tensor:
    """Spec under every vendor, vendors folded into channels: the "grouped" and "wide" routes.

    inp: [N, ...] read by every vendor (shared) or [M, N, ...], vendor j on
    inp[j]. Returns [M, N, ...out] either way, as `vmap` would.
    """
    if params:
        m = next(iter(params.values())).shape[0]
    elif not shared:
        m = inp.shape[0]
    else:  # no weights to say how many vendors read the input
        raise UnsupportedLayout("a spec without parameters")
    layers = layer_plan(spec)
    frozen = None  # the spec's own tensors, for parameters no vendor perturbs (requires_grad=False)

    def own(names: dict[str, str]) -> dict[str, torch.Tensor]:
        nonlocal frozen
        if all(full in params for full in names.values()):
            return {n: params[full] for n, full in names.items()}
        frozen = frozen or dict(spec.named_parameters())
        return {n: params[full] if full in params else frozen[full].expand(m, *frozen[full].shape)
                for n, full in names.items()}
    start, owned = 0, False
    if shared:
        h = None
        if wide:  # elementwise layers, pooling and flattening before the first weighted one commute with the copy
            while start < len(layers) and isinstance(layers[start][0], (*_ELEMENTWISE, *_POOLS, nn.Flatten)):
                inp = layers[start][0](inp)
                start += 1
            if start < len(layers):
                mod, names = layers[start]
                h = wide_layer(mod, own(names), inp, channels_last)
                start += h is not None
                owned = h is not None
        if h is None:
            h = inp.unsqueeze(1).expand(inp.shape[0], m, *inp.shape[1:])
    else:
        h = inp.transpose(0, 1)  # [N, M, ...]
    for mod, names in layers[start:]:
        h = grouped_layer(mod, own(names), h, channels_last, owned)
        owned = owned or not isinstance(mod, (nn.Flatten, nn.Identity))  # a fresh tensor: a ReLU may reuse it
    return h.transpose(0, 1)


def vmap_spec(spec: nn.Module, shared: bool) -> Callable[[dict, torch.Tensor], torch.Tensor]:
    """The general route: (params {name: [M, ...]}, inp) -> [M, N, ...]."""
    call = lambda p, x: functional_call(spec, p, (x,))
    # "different": each vendor (and each product, an element of x) draws its own dropout mask
    return vmap(call, in_dims=(0, None if shared else 0), randomness="different")


def spec_function(spec: nn.Module, formulation: str, shared: bool,
                  channels_last: bool = False) -> Callable[[dict, torch.Tensor], torch.Tensor]:
    """(params, inp) -> [M, N, ...] for `spec` in a concrete formulation; vmap for what it cannot express."""
    if formulation not in FORMULATIONS[1:]:
        raise ValueError(f"formulation must be one of {', '.join(FORMULATIONS)}, got {formulation!r}")
    if formulation == "vmap" or not expressible(spec) or (shared and not any(True for _ in spec.parameters())):
        return vmap_spec(spec, shared)
    wide = formulation == "wide"
    return lambda params, inp: grouped_spec(spec, params, inp, shared, wide, channels_last)
