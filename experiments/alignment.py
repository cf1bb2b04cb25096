"""The alignment grid: is V2's direction a good approximation of the gradient, and does scaling the market help?

    uv run python experiments/alignment.py                       # the grid of docs/alignment.md (~30 min, 2 CPU cores)
    uv run python experiments/alignment.py --batches 2 --cells 2  # a quick look

Measures every cell of `marketplace.diagnostics.grid.default_cells()` with
every estimator, at the initial weights and at a trained checkpoint (made
first with `marketplace train --vendors 4,4,4 --steps STEPS` when absent),
and writes results/alignment/{alignment.json, alignment.md, alignment.png}.
One cell from the command line: `marketplace align`.
"""

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from marketplace.diagnostics.grid import default_cells, format_table, plot, run_grid, write_atomic
from marketplace.machine import machine_summary, resolve_device
from marketplace.training import TrainConfig, load_checkpoint, market_from_checkpoint, train


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/alignment_4x4x4.safetensors",
                        help="the trained weights (trained first when the file is absent)")
    parser.add_argument("--train-steps", type=int, default=500, help="steps of the checkpoint when it is trained here")
    parser.add_argument("--batches", type=int, default=8, help="batches averaged per cell")
    parser.add_argument("--cells", type=int, default=None, help="only the first N cells (a quick look)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/alignment")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if not Path(args.checkpoint).exists():
        print(f"training the checkpoint: 4x4x4, {args.train_steps} steps -> {args.checkpoint}")
        train(TrainConfig(vendors=(4, 4, 4), steps=args.train_steps, checkpoint=args.checkpoint, seed=args.seed,
                          device=args.device, data_dir=args.data_dir))
    ckpt = load_checkpoint(args.checkpoint)
    trained = market_from_checkpoint(ckpt, args.checkpoint, device)
    cells = default_cells()[: args.cells]
    start = time.perf_counter()
    rows = run_grid(cells, {"init": None, "trained": trained}, args.batches, args.seed, device,
                    data_dir=args.data_dir)
    config = ckpt.meta.get("config", {})
    meta = {
        "machine": machine_summary(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - start, 1), "batches_per_cell": args.batches, "seed": args.seed,
        "checkpoint": {"path": args.checkpoint, "vendors": config.get("vendors"), "steps": ckpt.optimizer.get("steps"),
                       "lr": config.get("lr"), "probe_scale": config.get("probe_scale"), "batch": config.get("batch"),
                       "test_accuracy": ckpt.meta.get("test_accuracy")},
    }
    out = Path(args.out)
    write_atomic(out / "alignment.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    acc = meta["checkpoint"]["test_accuracy"]
    acc_text = f", {acc:.2f}% test accuracy" if acc is not None else ""
    write_atomic(out / "alignment.md", "\n".join([
        "# Alignment of the market's direction with the true gradient",
        "",
        f"{meta['machine']}; {meta['date']}; {args.batches} batches per cell (mean, ± standard error of the "
        f"whole-model V2 cosine); seed {args.seed}. Trained = `{args.checkpoint}`: V2 "
        f"{'x'.join(map(str, config.get('vendors', [])))}, {meta['checkpoint']['steps']} steps{acc_text}.",
        "Per-spec columns: spec 0 / spec 1 / spec 2. Discussion: docs/alignment.md.",
        "",
        format_table(rows),
        "",
    ]))
    plot(rows, out / "alignment.png")
    print(f"wrote {out}/alignment.{{json,md,png}} in {meta['seconds']:.0f} s")
    return rows


if __name__ == "__main__":
    main()
