"""Short screens of continual-learning settings, each against the published ones, and their ablation table.

    OMP_NUM_THREADS=1 uv run python experiments/continual_screens.py nine \\
        --checkpoint results/continual/bases/no9.safetensors --steps 2000 --out runs/screens/nine

Every variant changes the published settings (lr 1e-2 fixed, probes at lr,
whole-model unit vector, z-scores, 4x4x4, 240 + 16 images per step, one update per
step) in one respect and runs the same stream for `--steps` steps from the
same base. Each run is resumable (its own checkpoint under --out); running
the same command again skips finished variants and resumes an unfinished
one. The table gives new-class and old-class validation at the end, and the
change against the published run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from marketplace.continual.config import ContinualConfig
from marketplace.continual.experiment import run_experiment
from marketplace.continual.report import PrintProgress
from marketplace.io import write_atomic
from marketplace.training import JsonLog

# The published settings where they differ from ContinualConfig's defaults (ranks, balanced paths).
PUBLISHED: dict = {"attribution": "zscore", "balanced": False}

# name -> what it changes in the published settings; "published" first: every other row is compared with it.
VARIANTS: dict[str, dict] = {
    "published": {},
    "baseline": {"baseline": True},  # path loss minus base loss: the example's difficulty cancels
    "lr 3e-2": {"lr": 3e-2, "probe_scale": 1 / 3},  # larger steps, the same probe width
    "lr 1e-1": {"lr": 1e-1, "probe_scale": 0.1},
    "baseline, lr 3e-2": {"baseline": True, "lr": 3e-2, "probe_scale": 1 / 3},
    "baseline, lr 1e-1": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1},
    "baseline, vendors 4x4x16": {"baseline": True, "vendors": (4, 4, 16)},
    # large steps to learn the new class, smaller ones once it is learned
    "baseline, lr 1e-1 to 1e-2 over the second half": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1,
                                                       "lr_end": 1e-2, "lr_hold": "half"},
    "baseline, lr 1e-1, rank attribution": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1, "attribution": "rank"},
    "baseline, lr 1e-1, vendors 4x4x16": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1, "vendors": (4, 4, 16)},
    "baseline, lr 1e-1, rank attribution, vendors 8x8x8": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1,
                                                            "attribution": "rank", "vendors": (8, 8, 8)},
    # the cheap head gets many vendors, as in the bases' training: the step's noise shifts towards the head
    "baseline, lr 1e-1, rank attribution, vendors 4x4x64": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1,
                                                             "attribution": "rank", "vendors": (4, 4, 64)},
    "baseline, lr 1e-1, rank attribution, balanced paths": {"baseline": True, "lr": 1e-1, "probe_scale": 0.1,
                                                            "attribution": "rank", "balanced": True},
    # only the biases, the norms and the head learn: a smaller space to search, and the kernels that every
    # old class reads stay as they were
    "baseline, lr 1e-1, rank attribution, balanced paths, partial": {
        "baseline": True, "lr": 1e-1, "probe_scale": 0.1, "attribution": "rank", "balanced": True, "learn": "partial"},
    "baseline, lr 3e-2, rank attribution, balanced paths, partial": {
        "baseline": True, "lr": 3e-2, "probe_scale": 1 / 3, "attribution": "rank", "balanced": True,
        "learn": "partial"},
    # each record against its mirrored path (a central difference) instead of the base weights
    "mirrored, lr 1e-1, rank attribution, balanced paths": {"mirrored": True, "lr": 1e-1, "probe_scale": 0.1,
                                                            "attribution": "rank", "balanced": True},
    # more directions per step where vendors are cheap (the head); with 256 head vendors each record probes its own
    "mirrored, lr 1e-1, rank attribution, balanced paths, vendors 4x4x64": {
        "mirrored": True, "lr": 1e-1, "probe_scale": 0.1, "attribution": "rank", "balanced": True,
        "vendors": (4, 4, 64)},
    "mirrored, lr 1e-1, rank attribution, balanced paths, vendors 4x4x256": {
        "mirrored": True, "lr": 1e-1, "probe_scale": 0.1, "attribution": "rank", "balanced": True,
        "vendors": (4, 4, 256)},
    # four updates a step, each from 64 records, at a smaller rate: more, shorter steps for the same images
    "baseline, lr 5e-2, rank attribution, balanced paths, K = 64": {
        "baseline": True, "lr": 5e-2, "probe_scale": 0.2, "attribution": "rank", "balanced": True, "records": 64},
    "baseline, lr 2.5e-2, rank attribution, balanced paths, K = 64": {
        "baseline": True, "lr": 2.5e-2, "probe_scale": 0.4, "attribution": "rank", "balanced": True, "records": 64},
    "baseline, balanced paths": {"baseline": True, "balanced": True},
    "vendors 4x4x16": {"vendors": (4, 4, 16)},  # more vendors where the head is cheap
    "unit per spec": {"unit": "spec"},
    "rank attribution": {"attribution": "rank"},  # centred ranks: no record outweighs another
    "balanced paths": {"balanced": True},
    "K = 512": {"records": 512},  # one update every two steps, from twice the records
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=["dress", "dress-class10", "nine"])
    p.add_argument("--checkpoint", required=True, help="the base every variant starts from")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--variants", default=";".join(VARIANTS),
                   help="names separated by ';' (names hold commas; default: all)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--few-shot", action="store_true", help="every variant on the published few-shot sampling")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/screens")
    return p.parse_args(argv)


def slug(name: str) -> str:
    return re.sub(r"-+", "-", "".join(c if c.isalnum() else "-" for c in name)).strip("-")


def settings(name: str, steps: int) -> dict:
    """The ContinualConfig fields of a variant: the published settings, changed in one respect."""
    out = {**PUBLISHED, **VARIANTS[name]}
    if out.get("lr_hold") == "half":
        out["lr_hold"] = steps // 2
    return out


def run_variant(args: argparse.Namespace, name: str, out: Path) -> dict:
    """Run (or resume, or read back) one variant; its summary."""
    summary_path = out / f"{slug(name)}.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    save = out / f"{slug(name)}.safetensors"
    config = ContinualConfig(experiment=args.experiment, checkpoint=args.checkpoint, steps=args.steps,
                             few_shot=args.few_shot, eval_every=args.eval_every, eval_samples=args.eval_samples,
                             device="cpu", data_dir=args.data_dir, save=str(save), resume=save.exists(),
                             **settings(name, args.steps))
    summary = run_experiment(config, [PrintProgress(every_seconds=60), JsonLog(out / f"{slug(name)}.jsonl")])
    summary["variant"] = name
    write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    return summary


def table(rows: list[dict]) -> str:
    ref = rows[0]
    lines = ["| variant | new class, validation | old classes, validation | old change | new vs published |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['val_new_end']:.2f}% | {r['val_old_end']:.2f}% | "
                     f"{-r['old_drop_points']:+.2f} | {r['val_new_end'] - ref['val_new_end']:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    names = [n.strip() for n in args.variants.split(";") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if names[0] != "published":
        names.insert(0, "published")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(args, name, out) for name in names]
    text = (f"# Continual screens: {args.experiment}, {args.steps} steps from {args.checkpoint}"
            f"{', few-shot' if args.few_shot else ''}\n\n{table(rows)}\n")
    write_atomic(out / "screens.md", text)
    write_atomic(out / "screens.json", json.dumps(rows, indent=2) + "\n")
    print(text)
    return rows


if __name__ == "__main__":
    main()
