"""Fine-tune a model you have, forward-only: a CNN trained by backprop on digits 0-4 learns all ten with a market.

    uv run python examples/finetune.py --steps 300
    uv run python examples/finetune.py --steps 300 --freeze    # perturb only the biases and the head

Fails loudly if fine-tuning does not beat the model it started from.
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from marketplace import V2, Market, path_losses
from marketplace.data import load_split


def main(pretrain: int = 300, steps: int = 300, rank: int = 1, data_dir: str | None = None,
         freeze: bool = False) -> tuple[float, float]:
    torch.manual_seed(0)
    x, y = load_split("mnist", "train", data_dir)
    x = x.float().div(255).unsqueeze(1) if x.dim() == 3 else x.float().div(255)
    xt, yt = load_split("mnist", "test", data_dir)
    xt = (xt.float().div(255).unsqueeze(1) if xt.dim() == 3 else xt.float().div(255))[:2000]
    yt = yt[:2000]
    accuracy = lambda model: 100.0 * float((model(xt).argmax(1) == yt).float().mean())
    g = torch.Generator().manual_seed(0)

    # The model you have: here trained by backprop on digits 0-4 only (any trained nn.Module will do).
    features = nn.Sequential(nn.Conv2d(1, 16, 5, 2), nn.ReLU(), nn.Conv2d(16, 32, 3, 2), nn.ReLU(), nn.Flatten())
    head = nn.Linear(32 * 5 * 5, 10)
    model, low = nn.Sequential(features, head), torch.nonzero(y < 5).squeeze(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(pretrain):
        idx = low[torch.randint(0, len(low), (64,), generator=g)]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        before = accuracy(model)

    # Fine-tune its own modules, forward-only, on all ten digits: two specs, rank-1 vendors. As for backprop,
    # requires_grad=False freezes a parameter: every vendor reads it, none perturbs it, no update moves it.
    if freeze:
        for p in features.parameters():
            p.requires_grad_(p.dim() == 1)  # the kernels stay as trained; their biases and the head learn
    market = Market([features, head], vendors=[8, 8], rank=rank)
    optimizer = V2(market, lr=0.3, probe_scale=0.1, seed=0)
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        out = market.evaluate(x[idx], optimizer.vendors)  # products [64, 128, 10], paths [64, 2]
        optimizer.step(path_losses(out.products, y[idx]), out.paths)
    with torch.no_grad():
        after = accuracy(market)
    print(f"test accuracy on all ten digits: {before:.2f}% before (trained on 0-4), {after:.2f}% after "
          f"{steps} forward-only steps (rank {rank}{', kernels frozen' if freeze else ''})")
    if after <= before:
        raise SystemExit("fine-tuning did not beat the model it started from")
    return before, after


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=1, help="0: dense vendors")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--freeze", action="store_true", help="freeze the convolution kernels (requires_grad=False)")
    args = parser.parse_args()
    main(args.pretrain, args.steps, args.rank, args.data_dir, args.freeze)
