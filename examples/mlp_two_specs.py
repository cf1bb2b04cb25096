"""Your own model as a market: an MLP split into two specs, trained with V2 on MNIST.

    uv run python examples/mlp_two_specs.py --steps 300

Fails loudly if it misses its target accuracy.
"""

import argparse

import torch
from torch import nn

from marketplace import V2, Market, path_losses
from marketplace.data import load_split


def main(steps: int = 300, target: float = 80.0, data_dir: str | None = None) -> float:
    torch.manual_seed(0)
    images, labels = load_split("mnist", "train", data_dir)
    x_train, y_train = images.flatten(1).float() / 255, labels
    images, labels = load_split("mnist", "test", data_dir)
    x_test, y_test = images.flatten(1).float() / 255, labels

    # Any modules whose forward depends only on their parameters and input will do.
    specs = [nn.Sequential(nn.Linear(784, 64), nn.ReLU()), nn.Linear(64, 10)]
    market = Market(specs, vendors=[8, 8])  # 64 paths per step, evaluated in one batched pass
    optimizer = V2(market, lr=0.5, probe_scale=0.1, decay=1e-4, seed=0)
    print(f"market {'x'.join(map(str, market.vendor_counts))}: {market.num_paths} paths, {steps} steps", flush=True)

    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(x_train), (256,), generator=g)
        out = market.evaluate(x_train[idx], optimizer.vendors)  # products [64, 256, 10], paths [64, 2]
        losses = path_losses(out.products, y_train[idx])
        optimizer.step(losses, out.paths)
        if (step + 1) % max(1, steps // 10) == 0:  # a line now and then: a minute is long in silence
            print(f"step {step + 1}/{steps}  mean path loss {float(losses.mean()):.3f}", flush=True)

    with torch.no_grad():
        accuracy = 100.0 * float((market(x_test).argmax(1) == y_test).float().mean())
    print(f"test accuracy after {steps} steps: {accuracy:.2f}%")
    if accuracy < target:
        raise SystemExit(f"missed the target of {target}%")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--target", type=float, default=80.0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    main(args.steps, args.target, args.data_dir)
