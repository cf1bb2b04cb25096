"""What a module must be to serve as a spec, and how its random layers draw.

A spec is any `nn.Module` whose forward is a function of its parameters and
its input. `check_specs` refuses, at construction and in one line, what a
market cannot hold:

- running statistics (BatchNorm, `track_running_stats=True`, any buffer
  named `running_*`): they mix the products of every vendor, most of them
  discarded (docs/algorithm.md section 9). Buffers that stay constant (masks,
  positional tables) are kept; one that changes during a forward anyway is
  caught by `check_buffers` and named.
- one parameter tensor in two specs: each spec is perturbed on its own, so
  tied weights would receive two different deltas.

A spec without parameters (an `nn.Flatten`, a pooling layer between two
specs) is allowed: it has one implicit vendor and no deltas.

Random layers (Dropout and anything calling a random op): the market runs
the vendors under `vmap(randomness="different")`, so in training mode every
vendor, and every product, draws its own mask. The draws come from the
global generator forked and seeded from the vendors' sampling seed
(`seeded_randomness`): the same vendors give the same masks, and the
caller's RNG state is left untouched. `market(x)` runs in eval mode and is
deterministic.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .errors import MarketError

_MIX = 0x9E3779B97F4A7C15  # separates the random-layer seed from the upstream-sampling seed


def _where(k: int, name: str) -> str:
    return f"spec {k}" + (f" ({name})" if name else "")


def refuse_running_statistics(k: int, spec: nn.Module) -> None:
    """Refuse BatchNorm and any module that keeps running statistics, naming the module."""
    for name, module in spec.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise MarketError(
                f"{_where(k, name)} is a {type(module).__name__}: its batch statistics and running averages "
                "mix the market's products, most of which are discarded (docs/algorithm.md section 9); "
                "use InstanceNorm, GroupNorm or LayerNorm instead"
            )
        running = [b for b, _ in module.named_buffers(recurse=False)
                   if b.startswith("running_") or b == "num_batches_tracked"]
        if getattr(module, "track_running_stats", False) is True or running:
            raise MarketError(
                f"{_where(k, name)} is a {type(module).__name__} that keeps running statistics "
                f"({', '.join(running) or 'track_running_stats=True'}): they would mix the market's products; "
                "build it with track_running_stats=False"
            )


def refuse_tied_parameters(specs: Sequence[nn.Module]) -> None:
    """One tensor in two specs would get two different deltas: refuse it, naming both places."""
    owner: dict[int, tuple[int, str]] = {}
    for k, spec in enumerate(specs):
        for name, p in spec.named_parameters():
            if id(p) in owner and owner[id(p)][0] != k:
                k0, name0 = owner[id(p)]
                raise MarketError(
                    f"spec {k0} ({name0}) and spec {k} ({name}) share one parameter tensor: each spec is "
                    "perturbed on its own, so tied weights cannot be split across specs; put both uses in "
                    "one spec or give each its own copy"
                )
            owner.setdefault(id(p), (k, name))


def refuse_reused_modules(k: int, spec: nn.Module) -> None:
    """One module object at two places in a spec: `functional_call` cannot swap its weights back."""
    seen: dict[int, str] = {}
    for name, module in spec.named_modules(remove_duplicate=False):
        if id(module) in seen and next(module.parameters(recurse=False), None) is not None:
            raise MarketError(
                f"spec {k} uses one {type(module).__name__} twice ({seen[id(module)] or 'the spec'} and {name}): "
                "torch.func.functional_call cannot swap its weights back; use two modules and tie their "
                "parameters instead (b.weight = a.weight)"
            )
        seen.setdefault(id(module), name)


def check_specs(specs: Sequence[object]) -> list[nn.Module]:
    """The specs as a list, after refusing what a market cannot hold (one-line `MarketError`s)."""
    specs = list(specs)
    if not specs:
        raise MarketError("a market needs at least one spec")
    for k, spec in enumerate(specs):
        if not isinstance(spec, nn.Module):
            raise MarketError(f"spec {k} is a {type(spec).__name__}, not an nn.Module")
        refuse_running_statistics(k, spec)
        refuse_reused_modules(k, spec)
        for name, p in spec.named_parameters():
            if not p.is_floating_point():
                raise MarketError(f"spec {k} parameter {name} is {p.dtype}: only floating-point weights can be perturbed")
    refuse_tied_parameters(specs)
    return specs


def has_parameters(spec: nn.Module) -> bool:
    """Whether the spec has a parameter to perturb (one not frozen by requires_grad=False)."""
    return any(p.requires_grad for p in spec.parameters())


def freeze_all_but_biases_norms_and_head(specs: Sequence[nn.Module]) -> None:
    """requires_grad=False on every weight matrix and kernel before the last spec (the head).

    What stays trainable: every one-dimensional parameter (biases, the
    norms' scales and shifts) and the whole head. A few thousand numbers
    instead of the whole model: a forward-only estimate of a direction
    improves as the space it searches shrinks, and a shift of domain or a
    new class can often be met by rescaling features and re-reading them.
    """
    for spec in specs[:-1]:
        for p in spec.parameters():
            p.requires_grad_(p.dim() == 1)


def vendor_counts(specs: Sequence[nn.Module], vendors: int | Sequence[int]) -> int | list[int]:
    """One int for all specs gives the parameter-free ones their single implicit vendor."""
    if isinstance(vendors, int) and not isinstance(vendors, bool):
        return [vendors if has_parameters(s) else 1 for s in specs]
    return vendors


def refuse_vendors_without_parameters(specs: Sequence[nn.Module], counts: Sequence[int]) -> None:
    for k, (spec, m) in enumerate(zip(specs, counts)):
        if m != 1 and not has_parameters(spec):
            raise MarketError(
                f"spec {k} ({type(spec).__name__}) has no parameters to perturb (none, or all frozen), "
                f"so its vendors would all be the same: "
                f"give it 1 vendor, not {m}"
            )


# -- buffers that change during a forward -----------------------------------------------


def buffer_versions(spec: nn.Module) -> dict[str, int]:
    """The version counter of every buffer: in-place writes bump it."""
    return {name: b._version for name, b in spec.named_buffers()}


def check_buffers(k: int, spec: nn.Module, before: dict[str, int], error: BaseException | None = None) -> None:
    """Raise a `MarketError` naming the module if a forward wrote to a buffer.

    Under vmap a write that depends on the (batched) input fails instead of
    bumping the version: `error` is that failure, recognised by its message.
    """
    if not before:
        return
    after = buffer_versions(spec)
    changed = [n for n, v in before.items() if after.get(n) != v]
    if not changed and error is not None and "inplace" in str(error).replace("-", "").lower():
        changed = list(before)
    if changed:
        owner = changed[0].rpartition(".")[0]
        kind = type(spec.get_submodule(owner)).__name__ if owner else type(spec).__name__
        raise MarketError(
            f"{_where(k, owner)} is a {kind} that changes its buffer {changed[0].rpartition('.')[2]!r} "
            "in forward (running statistics of some kind): a market evaluates many vendors on the same "
            "module, so such state would mix them; keep constant buffers only"
        )


# -- randomness ---------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(modules: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the block, each flag restored afterwards."""
    flags = [(m, m.training) for m in modules.modules()]
    for m, _ in flags:
        m.training = False
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def random_layer_seed(sampling_seed: int) -> int:
    """The seed of a step's dropout masks, derived from (not equal to) the upstream-sampling seed."""
    return ((sampling_seed * _MIX) ^ (sampling_seed >> 29)) & (2**63 - 1)


@contextlib.contextmanager
def seeded_randomness(seed: int, device: torch.device) -> Iterator[None]:
    """Random ops inside draw from `seed`; the caller's generator state is restored afterwards."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(seed)
        yield
