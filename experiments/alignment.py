"""The alignment grid: is V2's direction a good approximation of the gradient, and does scaling the market help?

    uv run python experiments/alignment.py                       # the grid of docs/alignment.md (~30 min on 2 busy CPU cores)
    uv run python experiments/alignment.py --batches 2 --cells 2  # a quick look

Measures every cell of `marketplace.diagnostics.grid.default_cells()` with
every estimator, at the initial weights and at a trained checkpoint (made
first with `marketplace train --vendors 4,4,4 --steps STEPS` when absent),
and writes runs/alignment/{alignment.json, alignment.md, alignment.png}
(`--out results/alignment` rewrites the committed grid).
One cell from the command line: `marketplace align`.
"""

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from marketplace.diagnostics.grid import default_cells, format_table, plot, run_grid
from marketplace.io import write_atomic
from marketplace.machine import machine_summary, resolve_device
from marketplace.training import DEFAULT_LR, TrainConfig, load_checkpoint, market_from_checkpoint, train


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
    parser.add_argument("--out", default="runs/alignment")
    parser.add_argument("--replot", action="store_true", help="rewrite the table and plot from OUT/alignment.json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if not args.replot and not Path(args.checkpoint).exists():
        print(f"training the checkpoint: 4x4x4, {args.train_steps} steps -> {args.checkpoint}")
        train(TrainConfig(vendors=(4, 4, 4), steps=args.train_steps, checkpoint=args.checkpoint, seed=args.seed,
                          device=args.device, data_dir=args.data_dir))
    out = Path(args.out)
    if args.replot:  # tables and plot again from alignment.json, nothing measured
        saved = json.loads((out / "alignment.json").read_text())
        report(out, saved["meta"], saved["rows"])
        return saved["rows"]
    ckpt = load_checkpoint(args.checkpoint)
    trained = market_from_checkpoint(ckpt, args.checkpoint, device)
    cells = default_cells()[: args.cells]
    start = time.perf_counter()
    partial = lambda rows: write_atomic(out / "alignment.partial.json", json.dumps(rows))
    rows = run_grid(cells, {"init": None, "trained": trained}, args.batches, args.seed, device,
                    data_dir=args.data_dir, done=partial)
    (out / "alignment.partial.json").unlink(missing_ok=True)
    config = ckpt.meta.get("config", {})
    meta = {
        "machine": machine_summary(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - start, 1), "batches_per_cell": args.batches, "seed": args.seed,
        "checkpoint": {"path": args.checkpoint, "vendors": config.get("vendors"), "steps": ckpt.optimizer.get("steps"),
                       "lr": config.get("lr"), "probe_scale": config.get("probe_scale"), "batch": config.get("batch"),
                       "seed": config.get("seed"), "test_accuracy": ckpt.meta.get("test_accuracy")},
    }
    write_atomic(out / "alignment.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    report(out, meta, rows)
    print(f"wrote {out}/alignment.{{json,md,png}}")
    return rows


def report(out: Path, meta: dict, rows: list[dict]) -> None:
    """alignment.md and alignment.png from the measured rows."""
    ck = meta["checkpoint"]
    acc = f", {ck['test_accuracy']:.2f}% test accuracy" if ck.get("test_accuracy") is not None else ""
    made = (f"`marketplace train --vendors {','.join(map(str, ck['vendors'] or []))} --steps {ck['steps']}` "
            f"(batch {ck['batch']}, lr {ck['lr'] or DEFAULT_LR['v2']}, probe scale {ck['probe_scale']}, seed {ck.get('seed', 0)})")
    write_atomic(out / "alignment.md", "\n".join([
        "# Alignment of the market's direction with the true gradient",
        "",
        f"{meta['machine']}; {meta['date']}; {meta['batches_per_cell']} batches per cell (mean; ± the standard "
        f"error of the whole-model V2 cosine); seed {meta['seed']}. Cosines do not depend on the machine's load. "
        f"Trained weights: {made}{acc}.",
        "Per-spec columns: spec 0 / spec 1 / spec 2. Discussion: [docs/alignment.md](../../docs/alignment.md).",
        "",
        format_table(rows),
        "",
    ]))
    plot(rows, out / "alignment.png")


if __name__ == "__main__":
    main()
