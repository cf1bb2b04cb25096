"""The batched forward of low-rank vendors: every vendor runs through the base weights, plus its correction.

`x (W + a b^T)^T = x W^T + (x b) a^T`: the layer's own op with the base
weight, then a correction through two thin factors. Two routes, the same
result:

- grouped (`grouped_spec_forward`, for the layers `layouts` has grouped
  rules for): the vendors ride in the batch, [G, M, ...] as in
  `layouts.grouped_spec`. A factored layer is one base op over all
  vendors' inputs (once, for an input every vendor shares) and its
  correction, accumulated into that output in place (a batched
  matrix product): no second full-size tensor and no extra pass over it.
  A parameterless layer on a shared input runs once, before any copy.
  Where a layer's vendors are small beside its output (`MATERIALISE_BELOW`:
  a conv of a small CNN at batch 128), their weights W + a b^T are built
  for the call and the layer runs as the dense route runs it: a thin
  correction costs a CPU about as long as the base op, whatever its FLOPs,
  while these weights add nothing to the step's peak that matters. Large
  layers (a ResNet-18 at small batch) keep the factored form.
- vmap (`spec_forward`'s fallback, any spec): `vmap` over the vendors with
  the factored weights left out of the vmapped parameters, and a forward
  hook on each factored layer that adds its correction. The hooks live
  for one call only: the spec itself is left as it was.

Dense-perturbed parameters (biases, norms) are stacked per vendor in both,
as in the dense route.

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

from . import layouts
from .errors import MarketError, UnsupportedLayout


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


def factor_deltas(a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Every vendor's whole delta a[j] b[j]^T of a factored weight: a [M, rows, q], b [M, cols, q] -> [M, *shape]."""
    return torch.bmm(a, b.transpose(1, 2)).reshape(a.shape[0], *shape)


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


# Build a factored layer's vendor weights when M * weight numbers <= this * the layer's output numbers.
MATERIALISE_BELOW = 1 / 16


def _small_vendors(module: nn.Module, w: torch.Tensor, m: int, h: torch.Tensor, shared: bool) -> bool:
    """Whether M copies of w are small beside the layer's output (estimated at stride 1)."""
    features = h.shape[-1] if isinstance(module, nn.Linear) else h.shape[1 if shared else 2]
    out = h.numel() // features * w.shape[0] * (m if shared else 1)
    return m * w.numel() <= MATERIALISE_BELOW * out


def _materialised(module: nn.Module, own: dict[str, torch.Tensor], h: torch.Tensor, shared: bool,
                  owned: bool, channels_last: bool) -> torch.Tensor:
    """The layer as the dense grouped route runs it, on vendor weights own {name: [M, ...]}."""
    if shared:
        y = layouts.wide_layer(module, own, h, channels_last)  # [N, M, ...]: one op of M * O outputs
        if y is not None:
            return y
        m = own["weight"].shape[0]
        h = h.unsqueeze(1).expand(h.shape[0], m, *h.shape[1:])
    return layouts.grouped_layer(module, own, h, channels_last, owned)


def _factored_conv(module: nn.Conv2d, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, h: torch.Tensor,
                   shared: bool) -> torch.Tensor:
    """Conv2d under M factored vendors: h [N, C, H, W] (shared) or [G, M, C, H, W] -> [G, M, O, H', W']."""
    m, out, q = a.shape
    kernels = b.transpose(1, 2).reshape(m * q, *w.shape[1:]).to(h.dtype)  # vendor j's q kernels
    a = a.to(h.dtype)
    if shared:
        n = h.shape[0]
        y = module._conv_forward(h, w, None)  # [N, O, H', W'], once
        z = module._conv_forward(h, kernels, None)  # [N, M*q, H', W']: every vendor's thin conv at once
        full = torch.einsum("moq,nmqp->nmop", a, z.view(n, m, q, -1))
        full += y.view(n, 1, out, -1)
        return full.view(n, m, out, *y.shape[2:])
    g = h.shape[0]
    y = module._conv_forward(h.reshape(g * m, *h.shape[2:]), w, None)  # [G*M, O, H', W']
    z = F.conv2d(h.reshape(g, m * h.shape[2], *h.shape[3:]), kernels, None, module.stride, module.padding,
                 module.dilation, m)  # [G, M*q, H', W']
    mix = a.expand(g, m, out, q).reshape(g * m, out, q)
    y.view(g * m, out, -1).baddbmm_(mix, z.view(g * m, q, -1))
    return y.view(g, m, out, *y.shape[2:])


def _factored_linear(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, h: torch.Tensor,
                     shared: bool) -> torch.Tensor:
    """Linear under M factored vendors: h [N, ..., F] (shared) or [G, M, ..., F] -> [G, M, ..., O]."""
    a, b = a.to(h.dtype), b.to(h.dtype)
    if shared:
        t = torch.einsum("n...f,mfq->nm...q", h, b)
        return torch.einsum("nm...q,moq->nm...o", t, a) + F.linear(h, w).unsqueeze(1)
    y = F.linear(h, w)
    y += torch.einsum("gm...q,moq->gm...o", torch.einsum("gm...f,mfq->gm...q", h, b), a)
    return y


def grouped_spec_forward(spec: nn.Module, base: dict[str, torch.Tensor], parts: LowRankParts,
                         inp: torch.Tensor, shared: bool, channels_last: bool = False) -> torch.Tensor:
    """The grouped route (module docstring): [M, N, ...out], as `spec_forward`.

    Raises UnsupportedLayout for a layer it has no rule for (the caller falls back to vmap).
    """
    if parts.scaled or not layouts.expressible(spec):
        raise UnsupportedLayout("a spec the grouped low-rank route has no rules for")
    some = next(iter(parts.factors.values()), (None,))[0]
    m = some.shape[0] if some is not None else next(iter(parts.dense.values())).shape[0]
    stacked = lambda full: (base[full] + parts.dense[full].to(base[full].dtype) if full in parts.dense
                            else base[full].expand(m, *base[full].shape))
    h, owned = (inp if shared else inp.transpose(0, 1)), False  # shared: [N, ...]; else [G, M, ...]
    for module, names in layouts.layer_plan(spec):
        weight = names.get("weight")
        if weight in parts.factors:
            if not (type(module) is nn.Conv2d and module.groups == 1) and type(module) is not nn.Linear:
                raise UnsupportedLayout(type(module).__name__)
            a, b = parts.factors[weight]
            w = base[weight]
            if _small_vendors(module, w, m, h, shared):
                own = {"weight": w + factor_deltas(a, b, w.shape).to(w.dtype)}
                own.update({n: stacked(full) for n, full in names.items() if n != "weight"})
                h, shared, owned = _materialised(module, own, h, shared, owned, channels_last), False, True
                continue
            h = (_factored_conv(module, w, a, b, h, shared) if isinstance(module, nn.Conv2d)
                 else _factored_linear(w, a, b, h, shared))
            if "bias" in names:  # [M, O] per vendor, added in place
                bias = stacked(names["bias"]).to(h.dtype)
                h += bias.view(1, m, *([1] * (h.dim() - 3)), -1) if isinstance(module, nn.Linear) \
                    else bias.view(1, m, -1, *([1] * (h.dim() - 3)))
            shared, owned = False, True
            continue
        if shared and not names:  # no weights: run it once on the input every vendor shares
            h = module(h)
            continue
        if shared:
            h, shared = h.unsqueeze(1).expand(h.shape[0], m, *h.shape[1:]), False
        h = layouts.grouped_layer(module, {n: stacked(full) for n, full in names.items()}, h, channels_last, owned)
        owned = owned or not isinstance(module, (nn.Flatten, nn.Identity))
    if shared:
        h = h.unsqueeze(1).expand(h.shape[0], m, *h.shape[1:])
    return h.transpose(0, 1)


def _small_weights_built(base: dict[str, torch.Tensor], parts: LowRankParts, inp: torch.Tensor,
                         shared: bool) -> LowRankParts:
    """The vmap route's `MATERIALISE_BELOW`: factored weights whose M copies are small beside the spec's
    input (the layer's output is unknown before it runs) become dense deltas a b^T."""
    budget = MATERIALISE_BELOW * inp.numel()
    small = {n for n, (a, _) in parts.factors.items()
             if base[n].numel() * (1 if shared else a.shape[0]) <= budget}  # shared: M copies of one input
    if not small:
        return parts
    built = {n: factor_deltas(a, b, base[n].shape) for n, (a, b) in parts.factors.items() if n in small}
    return LowRankParts({**parts.dense, **built}, {n: f for n, f in parts.factors.items() if n not in small},
                        parts.scaled)


def spec_forward(spec: nn.Module, base: dict[str, torch.Tensor], parts: LowRankParts, inp: torch.Tensor,
                 shared: bool, grouped: bool = True, channels_last: bool = False) -> torch.Tensor:
    """Spec under every vendor: base {name: [*shape]} weights, the vendors' parts -> [M, N, ...].

    inp: [N, ...] read by every vendor (shared) or [M, N, ...], vendor j on
    inp[j]. grouped: the grouped route where every layer has a rule, else
    (and with grouped=False) vmap. channels_last: the grouped route's
    convolutions in that memory format, as `Market(channels_last=)` runs dense ones.
    """
    if grouped:
        try:
            return grouped_spec_forward(spec, base, parts, inp, shared, channels_last)
        except UnsupportedLayout:
            pass
    parts = _small_weights_built(base, parts, inp, shared)
    layers = factored_layers(spec, set(parts.factors) | set(parts.scaled))
    dense = {n: base[n] + d.to(base[n].dtype) for n, d in parts.dense.items()}
    call = lambda d, f, s, x: corrected_call(spec, layers, d, f, s, x)
    scaled_dims = {n: (None, 0) for n in parts.scaled}
    return vmap(call, in_dims=(0, 0, scaled_dims, None if shared else 0), randomness="different")(
        dense, parts.factors, parts.scaled, inp)
