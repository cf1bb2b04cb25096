"""A market: a model split into specs, each spec offered by several vendors.

The base weights live in ordinary `nn.Module`s (one per spec); vendors exist
only as deltas for the length of one step. `Market.evaluate` runs every path
through every vendor as one batched computation per spec over the vendors'
stacked weights, in one of the layouts of `layouts` (`vmap` of
`functional_call`, or the vendors folded into grouped and wide convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from . import layouts, lowrank
from . import specs as spec_rules
from .lowrank_layers import spec_forward as lowrank_spec_forward
from .cost import products
from .errors import MarketError
from .vendors import Vendors


@dataclass(frozen=True)
class SpecLayout:
    """Where each perturbed parameter of a spec sits in its flat vector (sorted by name).

    Parameters with requires_grad=False are frozen, as torch.optim leaves
    them: no vendor perturbs them and no update moves them (fine-tuning a
    part of a model); every vendor reads them as they are.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numel: int

    @classmethod
    def of(cls, module: nn.Module) -> "SpecLayout":
        params = sorted(((n, p) for n, p in module.named_parameters() if p.requires_grad), key=lambda kv: kv[0])
        names = tuple(n for n, _ in params)
        shapes = tuple(p.shape for _, p in params)
        offsets, total = [], 0
        for _, p in params:
            offsets.append(total)
            total += p.numel()
        return cls(names, shapes, tuple(offsets), total)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[..., numel] -> {name: [..., *shape]} views."""
        lead = flat.shape[:-1]
        return {
            n: flat[..., o : o + s.numel()].reshape(*lead, *s)
            for n, s, o in zip(self.names, self.shapes, self.offsets)
        }


@dataclass
class MarketOutput:
    """Final products of every evaluated path.

    products: [P, B, ...] (logits for a classifier); paths: int64 [P, N], the
    vendor chosen at each of the N specs for product p.
    """

    products: torch.Tensor
    paths: torch.Tensor


_PRECISIONS = {"auto": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _as_list(value: int | Sequence[int], n: int, what: str) -> list[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise MarketError(f"{what} has {len(values)} entries but the market has {n} specs")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise MarketError(f"{what} must be integers, got {values}")
    return values


class Market(nn.Module):
    """A model as N specs, with M_k vendors each and upstream sampling S_k.

    specs: one `nn.Module` per spec, applied in order; each must compute a
    function of its parameters and its input only (constant buffers are
    fine, running statistics and weights tied across specs are refused; see
    `specs.py`). vendors: M_k per spec, or one int for all (a spec without
    parameters then gets its one implicit vendor). sampling: S_k per spec,
    how many upstream products each vendor of spec k consumes; 0 = all.

    Random layers (Dropout, ...): `evaluate` in training mode (the default)
    lets every vendor and every product draw its own mask, seeded from the
    vendors so the same vendors give the same masks, without touching the
    global RNG; in eval mode (`market.eval()`) it is deterministic.
    `market(x)` is inference with the base weights: always in eval mode.

    Speed options of `evaluate` (the base weights stay float32 throughout):
    precision: "fp32", "bf16" or "fp16" autocast, or "auto" (bf16 on CUDA,
    fp32 elsewhere); losses are reduced in float32 either way.
    channels_last: image products in channels-last layout ("auto": yes, for
    4-d products; faster on CUDA and, measured, on the CPU too).
    compile: run each spec's vendor batch through `torch.compile` (True, or a
    mode name such as "max-autotune" or "reduce-overhead", CUDA graphs).
    formulation: how a spec's vendor batch is laid out ("vmap", "grouped",
    "wide", or "auto": the fastest measured per device); see layouts.py.
    rank: 0 for dense vendors; r > 0 makes each vendor of a Linear, Conv2d
    or Embedding weight a rank-r product drawn from its seed (lowrank.py),
    run as the base weights plus a correction per vendor (lowrank_layers.py;
    through vmap whatever the formulation, and never compiled).
    """

    def __init__(
        self,
        specs: Sequence[nn.Module],
        vendors: int | Sequence[int],
        sampling: int | Sequence[int] = 0,
        *,
        precision: str = "auto",
        channels_last: bool | str = "auto",
        compile: bool | str = False,
        formulation: str = "auto",
        rank: int = 0,
    ):
        super().__init__()
        if precision not in _PRECISIONS:
            raise MarketError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
        if channels_last not in (True, False, "auto"):
            raise MarketError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        if formulation not in layouts.FORMULATIONS:
            raise MarketError(f"formulation must be one of {', '.join(layouts.FORMULATIONS)}, "
                              f"got {formulation!r}")
        self.precision, self.channels_last = precision, channels_last
        self.compile = compile if isinstance(compile, str) else bool(compile)
        self.formulation = formulation
        self._compiled: dict = {}
        specs = spec_rules.check_specs(specs)
        self.specs = nn.ModuleList(specs)
        vendors = spec_rules.vendor_counts(specs, vendors)
        self.vendor_counts = tuple(_as_list(vendors, len(specs), "vendors"))
        self.sampling = tuple(_as_list(sampling, len(specs), "sampling"))
        if any(m < 1 for m in self.vendor_counts):
            raise MarketError(f"every spec needs at least 1 vendor, got {list(self.vendor_counts)}")
        spec_rules.refuse_vendors_without_parameters(specs, self.vendor_counts)
        if any(s < 0 for s in self.sampling):
            raise MarketError(f"upstream sampling must be >= 0 (0 = all), got {list(self.sampling)}")
        if self.sampling[0]:
            raise MarketError("spec 0 reads the input, not upstream products: its sampling must be 0")
        upstream = self.vendor_counts[0]
        for k in range(1, len(specs)):
            s = self.sampling[k]
            if s > upstream:
                raise MarketError(
                    f"spec {k} samples {s} upstream products but spec {k - 1} makes only {upstream}"
                )
            upstream = self.vendor_counts[k] * (s or upstream)
        self.layouts = tuple(SpecLayout.of(spec) for spec in specs)
        if not any(lay.numel for lay in self.layouts):
            raise MarketError("the market has no parameter to perturb: every parameter is frozen "
                              "(requires_grad=False) or the specs have none")
        self.rank = lowrank.check_rank(rank)
        self.lowrank_plans = tuple(lowrank.spec_plan(s, lay.names, lay.shapes, rank)
                                   for s, lay in zip(specs, self.layouts)) if rank else None

    # -- shape of the market -------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self.specs)

    def num_products(self) -> list[int]:
        """P_k, the number of products after each spec."""
        return list(products(self.vendor_counts, self.sampling))

    @property
    def num_paths(self) -> int:
        return self.num_products()[-1]

    # -- base weights --------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The leader path: the base weights, no perturbation, random layers off (inference)."""
        with spec_rules.eval_mode(self.specs):
            for k, spec in enumerate(self.specs):
                x = self._call(k, lambda inp: spec(inp), x)
        return x

    @torch.no_grad()
    def flat_parameters(self, k: int) -> torch.Tensor:
        """The base parameters of spec k as one float32 vector [numel] (sorted by name)."""
        params = dict(self.specs[k].named_parameters())
        if not self.layouts[k].numel:
            return torch.zeros(0, device=self.device)
        return torch.cat([params[n].reshape(-1).float() for n in self.layouts[k].names])

    @torch.no_grad()
    def add_(self, k: int, delta: torch.Tensor, alpha: float = 1.0) -> None:
        """theta_k += alpha * delta, with delta a flat [numel] vector in layout order.

        alpha is applied as torch.optim.SGD applies its lr (`add_(d, alpha=)`),
        so V2's step and SGD's on the same direction round alike.
        """
        params = dict(self.specs[k].named_parameters())
        for name, d in self.layouts[k].split(delta).items():
            params[name].add_(d.to(params[name].dtype), alpha=alpha)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # -- every path at once --------------------------------------------------

    def vendor_parameters(self, k: int, vendors: Vendors) -> dict[str, torch.Tensor]:
        """Stacked weights of every vendor of spec k: {name: [M_k, *shape]}."""
        layout = self.layouts[k]
        if not layout.numel:  # a spec without parameters: one implicit vendor, nothing to perturb
            return {}
        base = self.flat_parameters(k)
        return layout.split(base + vendors.deltas(k, layout.numel, base.device))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, vendors: Vendors) -> MarketOutput:
        """Run x through every path of the market.

        x: [B, ...] one batch. Returns products [P, B, ...] and paths [P, N].
        Full sampling makes product j * P_prev + p from upstream product p
        and vendor j; partial sampling draws, per vendor, S_k distinct
        upstream products with a CPU generator seeded by the vendors, so the
        choice is the same on every device. Random layers draw from a
        generator seeded by the vendors too (`specs.seeded_randomness`).
        """
        if tuple(vendors.counts) != self.vendor_counts:
            raise MarketError(
                f"vendors {list(vendors.counts)} do not match the market {list(self.vendor_counts)}"
            )
        device = x.device
        sampler = torch.Generator().manual_seed(vendors.sampling_seed & (2**63 - 1))
        amp = self._amp_dtype(device)
        batch = x.shape[0]
        products, paths = x, torch.zeros(1, 0, dtype=torch.int64, device=device)
        randomness = spec_rules.seeded_randomness(spec_rules.random_layer_seed(vendors.sampling_seed), device)
        with randomness, torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            for k in range(self.depth):
                m, s = self.vendor_counts[k], self.sampling[k]
                if k == 0 or not s:  # every vendor takes every upstream product
                    upstream = products.shape[0] if k else 1
                    flat = products.reshape(upstream * batch, *products.shape[2:]) if k else products
                    out = self._spec_forward(k, vendors, flat, shared=True)
                    products = out.reshape(m * upstream, batch, *out.shape[2:])
                    picked = torch.arange(upstream, device=device).repeat(m)
                    sources = torch.arange(m, device=device).repeat_interleave(upstream)
                else:  # vendor j takes its own s upstream products
                    upstream = products.shape[0]
                    choice = torch.rand(m, upstream, generator=sampler).argsort(dim=1)[:, :s].to(device)
                    inp = products[choice.reshape(-1)].reshape(m, s * batch, *products.shape[2:])
                    out = self._spec_forward(k, vendors, inp, shared=False)
                    products = out.reshape(m * s, batch, *out.shape[2:])
                    picked = choice.reshape(-1)
                    sources = torch.arange(m, device=device).repeat_interleave(s)
                paths = torch.cat([paths[picked], sources[:, None]], dim=1)
        return MarketOutput(products, paths)

    def _amp_dtype(self, device: torch.device) -> torch.dtype | None:
        if self.precision == "auto":
            return torch.bfloat16 if device.type == "cuda" else None
        return _PRECISIONS[self.precision]

    def _spec_forward(self, k: int, vendors: Vendors, inp: torch.Tensor, shared: bool) -> torch.Tensor:
        """Spec k under every vendor: low-rank vendors of a low-rank market as base + corrections, else stacked."""
        if self.rank and self.layouts[k].numel and hasattr(vendors, "lowrank_parts"):
            parts = vendors.lowrank_parts(k, self.lowrank_plans[k], inp.device)
            base = dict(self.specs[k].named_parameters())
            return self._call(k, lambda x: lowrank_spec_forward(self.specs[k], base, parts, x, shared,
                                                                channels_last=self._channels_last), inp)
        return self._vendor_forward(k, self.vendor_parameters(k, vendors), inp, shared)

    def _vendor_forward(self, k: int, params: dict[str, torch.Tensor], inp: torch.Tensor, shared: bool):
        """Spec k under every vendor's weights at once: [M, ...] params -> [M, N, ...] outputs.

        shared: every vendor reads the same input [N, ...] (one wide op),
        else vendor j reads inp[j] (grouped ops).
        """
        channels_last = self._channels_last
        form = layouts.resolve(self.formulation, inp.device)
        if form == "vmap" and shared and inp.dim() == 4 and channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        if not params:  # no parameters: the one implicit vendor runs the spec as it is
            run = (lambda x: self.specs[k](x)[None]) if shared else (lambda x: self.specs[k](x[0])[None])
            return self._call(k, run, inp)
        key = (k, shared, form)
        fn = self._compiled.get(key)
        if fn is None:
            fn = layouts.spec_function(self.specs[k], form, shared, channels_last)
            if self.compile:
                mode = self.compile if isinstance(self.compile, str) else None
                fn = torch.compile(fn, dynamic=False, mode=mode)
            self._compiled[key] = fn
        try:
            return self._call(k, lambda x: fn(params, x), inp)
        except layouts.UnsupportedLayout:  # a shape the grouped layout has no rule for: vmap from now on
            self._compiled[key] = fn = layouts.vmap_spec(self.specs[k], shared)
            return self._call(k, lambda x: fn(params, x), inp)

    def _call(self, k: int, fn, inp: torch.Tensor) -> torch.Tensor:
        """Run spec k, turning torch's shape errors into one line that names the spec.

        A forward that writes to a buffer (running statistics) is refused, naming the module.
        """
        buffers = spec_rules.buffer_versions(self.specs[k])
        try:
            out = fn(inp)
        except RuntimeError as e:
            spec_rules.check_buffers(k, self.specs[k], buffers, error=e)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MarketError(
                f"spec {k} ({type(self.specs[k]).__name__}) cannot take its input "
                f"of shape {list(inp.shape)}: {first}"
            ) from e
        spec_rules.check_buffers(k, self.specs[k], buffers)
        return out

    def extra_repr(self) -> str:
        market = "x".join(map(str, self.vendor_counts))
        sampling = "" if not any(self.sampling) else f", sampling={list(self.sampling)}"
        rank = f", rank={self.rank}" if self.rank else ""
        frozen = self.frozen_parameters
        frozen = f", frozen={frozen:,} parameters" if frozen else ""
        return f"market={market}{sampling}{rank}, paths={self.num_paths}{frozen}"

    @property
    def _channels_last(self) -> bool:
        """Whether the grouped routes run convolutions channels-last ("auto" says yes)."""
        return self.channels_last in (True, "auto")

    @property
    def frozen_parameters(self) -> int:
        """How many parameters no vendor perturbs (requires_grad=False)."""
        return sum(p.numel() for p in self.parameters() if not p.requires_grad)
