"""Time the market step against a per-vendor loop, backprop and inference; print a table, write JSON.

    uv run python benchmarks/step_speed.py                  # CUDA if present: 4/8/16 vendors, batch 512
    uv run python benchmarks/step_speed.py --device cpu     # smaller CPU defaults: 2/4 vendors, batch 64
"""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch

from marketplace.bench import bench_market, device_name, table, to_json
from marketplace.train import resolve_device


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

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    vendors = [int(v) for v in (args.vendors or ("4,8,16" if cuda else "2,4")).split(",")]
    batch = args.batch or (512 if cuda else 64)
    repeats = args.repeats or (20 if cuda else 3)
    rows = []
    for m in vendors:
        rows += bench_market(m, args.depth, batch, device, warmup=3 if cuda else 1, repeats=repeats,
                             compile=args.compile, precision=args.precision, loop=not args.no_loop)
    config = {"device": device_name(device), "torch": torch.__version__, "date": date.today().isoformat(),
              "depth": args.depth, "batch": batch, "vendors": vendors, "precision": args.precision,
              "compile": args.compile, "command": " ".join(sys.argv)}
    result = to_json(rows, config)
    text = table(rows)
    print(f"{config['device']}, torch {config['torch']}, depth {args.depth}, batch {batch}\n{text}")
    out = Path(args.out or f"benchmarks/results/step_speed_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(f"# Step speed: {config['device']}\n\n{config['date']}, torch "
                                      f"{config['torch']}, depth {args.depth}, batch {batch}, precision "
                                      f"{args.precision}, compile {args.compile}\n\n{text}\n")
    return result


if __name__ == "__main__":
    main()
