"""Time the market step against a per-vendor loop, backprop and inference; print a table, write JSON.

    uv run python benchmarks/step_speed.py                  # CUDA if present: 4/8/16 vendors, batch 512
    uv run python benchmarks/step_speed.py --device cpu     # smaller CPU defaults: 2/4 vendors, batch 64
    uv run python benchmarks/step_speed.py --device cpu --formulations all --page-faults

Writes runs/bench/step_speed_<device>.{json,md} unless --out is given (the
committed tables in benchmarks/results/ are only rewritten on purpose, with
--out). The timing code is benchmarks/lib/speed.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.lib, from any working directory

from benchmarks.lib.speed import Variant, run  # noqa: E402
from marketplace.io import write_atomic  # noqa: E402
from marketplace.machine import resolve_device  # noqa: E402

FORMULATION_ROWS = "vmap,grouped,wide"  # what --formulations all times


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--vendors", default=None, help="comma-separated vendor counts per spec to try "
                                                   "(default 4,8,16 on CUDA, 2,4 on CPU)")
    p.add_argument("--depth", type=int, default=3, help="market depth: the CNN split 1, 2 or 3 ways")
    p.add_argument("--batch", type=int, default=None, help="default 512 on CUDA, 64 on CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile each spec's vendor batch")
    p.add_argument("--no-loop", action="store_true", help="skip the slow per-vendor loop reference")
    p.add_argument("--formulations", default=None,
                   help="market-step variants side by side, comma-separated, e.g. 'vmap,grouped,wide,wide/bf16,"
                        "wide/compile=max-autotune,wide/nocl,wide/regen'; 'all' = vmap,grouped,wide")
    p.add_argument("--philox", action="store_true", help="also time expanding the deltas from their seeds alone")
    p.add_argument("--page-faults", action="store_true",
                   help="CPU: also compare minor page faults per step by allocator setting")
    p.add_argument("--note", default="", help="a line for the markdown, e.g. 'shared machine, 4 other jobs'")
    p.add_argument("--out", default=None, help="JSON path (default runs/bench/step_speed_<device>.json)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    variants = None
    if args.formulations:
        text = FORMULATION_ROWS if args.formulations == "all" else args.formulations
        variants = [v for v in text.split(",") if v]
        for v in variants:
            try:
                Variant.parse(v)
            except ValueError as e:
                parser().error(f"--formulations: {e}")
    try:
        vendors = [int(v) for v in args.vendors.split(",")] if args.vendors else None
    except ValueError:
        parser().error(f"--vendors must be comma-separated integers, got {args.vendors!r}")
    device = resolve_device(args.device)
    result = run(device, vendors, args.depth, args.batch, args.repeats, args.precision, args.compile,
                 not args.no_loop, args.out, variants=variants, philox=args.philox, note=args.note)
    if args.page_faults and device.type == "cpu":
        write_page_faults(result, args.out)
    return result


def write_page_faults(result: dict, out: str | None) -> None:
    """Minor page faults per CPU step under each allocator setting, beside the speed table."""
    from benchmarks.lib import page_faults

    m = (result["config"]["vendors"] or [4])[-1]
    rows = page_faults.compare(m=m, batch=result["config"]["batch"], steps=3, rounds=2)
    text = page_faults.table(rows)
    print(text)
    path = Path(out or "runs/bench/step_speed_cpu.json")
    path = path.with_name(path.stem + "_page_faults.json")
    write_atomic(path, json.dumps({"config": result["config"], "rows": rows}, indent=2))
    write_atomic(path.with_suffix(".md"), f"# Minor page faults per CPU step: {result['config']['device']}\n\n"
                 f"{result['config']['note']}\n\n{text}\n")


if __name__ == "__main__":
    main()
