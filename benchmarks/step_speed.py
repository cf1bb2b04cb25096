"""Time the market step against a per-vendor loop, backprop and inference; print a table, write JSON.

    uv run python benchmarks/step_speed.py                  # CUDA if present: 4/8/16 vendors, batch 512
    uv run python benchmarks/step_speed.py --device cpu     # smaller CPU defaults: 2/4 vendors, batch 64

The same as `marketplace bench`.
"""

import argparse

from marketplace.experiments.speed import run
from marketplace.machine import resolve_device


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vendors", default=None, help="comma-separated vendor counts per spec to try")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile each spec's vendor batch")
    parser.add_argument("--no-loop", action="store_true", help="skip the slow per-vendor loop reference")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/step_speed_<device>.json)")
    args = parser.parse_args(argv)
    vendors = [int(v) for v in args.vendors.split(",")] if args.vendors else None
    return run(resolve_device(args.device), vendors, args.depth, args.batch, args.repeats, args.precision,
               args.compile, not args.no_loop, args.out)


if __name__ == "__main__":
    main()
