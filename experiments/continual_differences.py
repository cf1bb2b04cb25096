"""How much of a one-example loss difference says which way is downhill: forward against central differences.

    OMP_NUM_THREADS=1 uv run python experiments/continual_differences.py \\
        --checkpoint results/continual/bases/digits.safetensors --out runs/differences

A continual record measures one example along one perturbation delta.
Against the base weights (the baseline) it measures L(w + delta) - L(w) =
g.delta + delta'H delta / 2 + ...; against the mirrored perturbation,
(L(w + delta) - L(w - delta)) / 2 = g.delta + (third order): the curvature
term, the same for +delta and -delta, cancels. For each example this
draws a delta of the continual runs' probe width, computes g.delta with
autograd (this script's reference only; the method never differentiates)
and both differences, and reports over the examples how well each
difference correlates with g.delta, for old-class and new-class images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.func import functional_call

from marketplace.continual.experiment import experiment_data
from marketplace.continual.losses import per_example_cross_entropy
from marketplace.continual.pretrain import load_market
from marketplace.io import write_atomic
from marketplace.machine import machine_name


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
            generator: torch.Generator) -> torch.Tensor:
    """[n, 3]: g.delta, the forward difference and the central difference of each example."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    rows = []
    for xi, yi in zip(x.split(1), y.split(1)):
        delta = {n: sigma * (2 * torch.rand(p.shape, generator=generator) - 1) for n, p in params.items()}
        live = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        loss = per_example_cross_entropy(functional_call(model, live, (xi,)), yi).sum()
        grads = torch.autograd.grad(loss, list(live.values()))
        slope = sum((g * delta[n]).sum() for g, n in zip(grads, live))
        with torch.no_grad():
            plus = per_example_cross_entropy(functional_call(model, {n: p + delta[n] for n, p in params.items()},
                                                             (xi,)), yi)
            minus = per_example_cross_entropy(functional_call(model, {n: p - delta[n] for n, p in params.items()},
                                                              (xi,)), yi)
        rows.append((float(slope), float(plus) - float(loss.detach()), float(plus - minus) / 2))
    return torch.tensor(rows, dtype=torch.float64)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="dress", choices=["dress", "nine"])
    p.add_argument("--checkpoint", required=True, help="the base (or a run's checkpoint) to measure at")
    p.add_argument("--sigma", type=float, default=0.01, help="the probes' half-width: lr 0.1 x probe scale 0.1")
    p.add_argument("--old", type=int, default=512, help="old-class training images")
    p.add_argument("--new", type=int, default=256, help="new-class training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/differences")
    args = p.parse_args(argv)
    if not Path(args.checkpoint).exists():
        sys.exit(f"error: no checkpoint at {args.checkpoint}")
    device = torch.device("cpu")
    data = experiment_data(args.experiment, args.data_dir, device)
    market, _ = load_market(args.checkpoint, device, data.classes)
    model = torch.nn.Sequential(*market.specs)
    generator = torch.Generator().manual_seed(args.seed)
    result = {"experiment": args.experiment, "checkpoint": args.checkpoint, "sigma": args.sigma,
              "machine": machine_name(device), "torch": torch.__version__, "parts": {}}
    lines = [f"# Forward and central differences against g.delta ({args.experiment}, {args.checkpoint}, "
             f"sigma {args.sigma})", "",
             "| images | n | mean abs g.delta | forward: mean | forward: corr with g.delta | "
             "central: corr with g.delta |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for part, (x, y, n) in {"old": (data.old_x, data.old_y, args.old), "new": (data.new_x, data.new_y, args.new)}.items():
        t = measure(model, x[:n], y[:n], args.sigma, generator)
        row = {"n": len(t), "mean_abs_slope": float(t[:, 0].abs().mean()), "forward_mean": float(t[:, 1].mean()),
               "forward_corr": correlation(t[:, 1], t[:, 0]), "central_corr": correlation(t[:, 2], t[:, 0])}
        result["parts"][part] = row
        lines.append(f"| {part} | {row['n']} | {row['mean_abs_slope']:.3g} | {row['forward_mean']:+.3g} | "
                     f"{row['forward_corr']:.3f} | {row['central_corr']:.3f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"differences_{args.experiment}.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out / f"differences_{args.experiment}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
