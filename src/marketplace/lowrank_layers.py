"""The batched forward of low-rank vendors: every vendor runs through the base weights, plus its correction.

`x (W + a b^T)^T = x W^T + (x b) a^T`: the layer's own op with the base
weight, then a correction through two thin factors. The spec runs under
`vmap` over the vendors with the factored weights left out of the vmapped
parameters, so torch computes the base op once for an input every vendor
shares (spec 0, full sampling) and as one batched product over all vendors'
inputs downstream; a forward hook on each factored layer adds its
correction. Dense-perturbed parameters (biases, norms) are stacked per
vendor, as in the dense route. The hooks live for one call only: the spec
itself is left as it was.

A factored weight must be read only through its layer's forward (what
`lowrank.factorable_weights` admits); a hook that never fired means it was
not, and is refused rather than silently unperturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .errors import MarketError


@dataclass
class LowRankParts:
    """One spec's vendors in the form the forward reads.

    dense: {name: [M, *shape]} deltas of dense-perturbed parameters.
    factors: {name: (a [M, rows, q], b [M, cols, q])}: vendor j adds a[j] b[j]^T.
    scaled: {name: (g [*shape], s [M])}: vendor j adds s[j] g (a shared direction).
    """

    dense: dict[str, torch.Tensor]
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scaled: dict[str, tuple[torch.Tensor, torch.Tensor]]


def weight_op(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's op on x with another weight and no bias (linear in the weight)."""
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, None)  # its stride, padding, dilation and padding mode
    if isinstance(module, nn.Embedding):
        return F.embedding(x, weight)
    return F.linear(x, weight)


def factor_correction(module: nn.Module, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The layer's op with weight a b^T, as two thin ops: a [rows, q], b [cols, q].

    Conv2d: b's columns are q kernels [C, kh, kw]; their outputs [N, q, H, W]
    are mixed per output channel by a (a 1x1 convolution).
    Embedding: row t of a b^T is a[t] b^T.
    """
    if isinstance(module, nn.Conv2d):
        kernels = b.T.reshape(b.shape[1], *module.weight.shape[1:])  # [q, C, kh, kw]
        z = module._conv_forward(x, kernels.to(x.dtype), None)
        return F.conv2d(z, a[:, :, None, None].to(z.dtype))
    if isinstance(module, nn.Embedding):
        return F.embedding(x, a) @ b.T
    return F.linear(F.linear(x, b.T.to(x.dtype)), a.to(x.dtype))


def factored_layers(spec: nn.Module, names) -> dict[nn.Module, str]:
    """{layer: the layout name of its weight} for the factored weights `names`."""
    by_id = {id(p): n for n, p in spec.named_parameters()}
    return {m: by_id[id(m.weight)] for m in spec.modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and by_id.get(id(m.weight)) in names}


def _hook(name: str, factors: dict, scaled: dict, fired: set):
    def hook(module, args, out):
        fired.add(name)
        if name in factors:
            corr = factor_correction(module, args[0], *factors[name])
        else:
            g, s = scaled[name]
            corr = s * weight_op(module, args[0], g.to(out.dtype) if out.is_floating_point() else g)
        return out + corr.to(out.dtype)
    return hook


def corrected_call(spec: nn.Module, layers: dict[nn.Module, str], dense: dict, factors: dict, scaled: dict,
                   x: torch.Tensor) -> torch.Tensor:
    """One vendor (under vmap: all of them): the spec with dense parameters swapped and corrections hooked."""
    fired: set[str] = set()
    handles = [m.register_forward_hook(_hook(n, factors, scaled, fired)) for m, n in layers.items()]
    try:
        out = functional_call(spec, dense, (x,))
    finally:
        for h in handles:
            h.remove()
    missing = set(layers.values()) - fired
    if missing:
        raise MarketError(f"low-rank weight {sorted(missing)[0]} was not read through its layer's forward: "
                          "its vendors cannot be corrected; use rank=0 for this model")
    return out


def spec_forward(spec: nn.Module, base: dict[str, torch.Tensor], parts: LowRankParts, inp: torch.Tensor,
                 shared: bool) -> torch.Tensor:
    """Spec under every vendor: base {name: [*shape]} weights, the vendors' parts -> [M, N, ...].

    inp: [N, ...] read by every vendor (shared) or [M, N, ...], vendor j on inp[j].
    """
    layers = factored_layers(spec, set(parts.factors) | set(parts.scaled))
    dense = {n: base[n] + d.to(base[n].dtype) for n, d in parts.dense.items()}
    call = lambda d, f, s, x: corrected_call(spec, layers, d, f, s, x)
    scaled_dims = {n: (None, 0) for n in parts.scaled}
    return vmap(call, in_dims=(0, 0, scaled_dims, None if shared else 0), randomness="different")(
        dense, parts.factors, parts.scaled, inp)
