"""The GPU suite's training parts: V2 as published, `marketplace train`'s defaults, backprop, continual learning.

A mixin of `suite.Suite`, which provides `size`, `device`, `data_dir`,
`results` and `left()` (the seconds of the budget left).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from marketplace.defaults import CLI_CHEAP_VENDORS, DEFAULT_LR


class TrainingParts:
    """The parts that train: each returns the figures it records."""

    def train_v2(self, vendors: int, checkpoint: Path, exclude: tuple[int, ...] = ()) -> dict:
        """V2 with the published settings (lr 0.1, probe scale 0.1, decay 1e-5, per-spec units)."""
        from marketplace.continual.pretrain import pretrain
        from marketplace.training import Hook, TrainConfig

        accuracy: dict[int, float] = {}

        class Track(Hook):
            def on_step(self, metrics):
                if "test_accuracy" in metrics:
                    accuracy[int(metrics["step"])] = float(metrics["test_accuracy"])

        s = self.size
        config = TrainConfig(algorithm="v2", vendors=(vendors,) * 3, batch=s.batch, lr=0.1, probe_scale=0.1,
                             decay=1e-5, steps=s.train_steps, max_seconds=max(5.0, self.left() - 5.0),
                             eval_every=s.eval_every, eval_samples=s.eval_samples, log_every=s.eval_every,
                             device=str(self.device), data_dir=self.data_dir, checkpoint=str(checkpoint),
                             checkpoint_every=s.train_steps)
        summary = pretrain(config, exclude=exclude, hooks=[Track()])
        accuracy[int(summary["steps"])] = float(summary["test_accuracy"])
        return {"market": f"{vendors}x{vendors}x{vendors}", "batch": s.batch, "steps": summary["steps"],
                "exclude": list(exclude), "test_accuracy_at": accuracy, "seconds_training": summary["seconds"],
                "ms_per_step": 1e3 * summary["seconds"] / max(1, summary["steps"]),
                "reference_8x8x8": {"500": 92.85, "1000": 95.09, "2000": 96.10}}

    def train_default(self, vendors: int, schedule: str, step_s: float, lr: float | None = None,
                      extend: bool = True) -> dict:
        """The default row: `marketplace train`'s defaults at --vendors m,m,m --batch 512, and the time to 98%.

        The defaults: --cheap-vendors (CLI_CHEAP_VENDORS), lr 0.15, probe scale 0.03, decay 1e-5.
        A constant rate runs on past train_steps while the training clock stays under goal_s (estimated from
        `step_s`, the measured seconds a step), so one run gives the accuracy at 2,000 steps, which is the same
        as a 2,000-step run's (batches and vendors are pure functions of the step), and the time to 98%. A
        schedule's horizon is train_steps. wall_s counts from before the data is loaded. `lr` replaces the
        default rate and `extend=False` stops at train_steps (the rate sweep).
        """
        from marketplace.training import Hook, TrainConfig, train

        s, t0 = self.size, time.perf_counter()
        curve: dict[int, float] = {}
        reached: dict[str, float] = {}

        class Track(Hook):
            def on_step(self, metrics):
                if "test_accuracy" in metrics:
                    curve[int(metrics["step"])] = round(float(metrics["test_accuracy"]), 2)
                    if not reached and metrics["test_accuracy"] >= s.goal_accuracy:
                        reached.update(step=int(metrics["step"]), training_s=round(float(metrics["seconds"]), 2),
                                       wall_s=round(time.perf_counter() - t0, 2))

        steps = s.train_steps
        if schedule == "constant" and extend:
            steps = max(steps, min(20 * steps, int(s.goal_s / max(step_s, 1e-4))))
        config = TrainConfig(algorithm="v2", vendors=(vendors,) * 3, cheap_vendors=CLI_CHEAP_VENDORS, batch=s.batch,
                             lr=lr, schedule=schedule,
                             schedule_steps=s.train_steps if schedule != "constant" else None,
                             steps=steps, max_seconds=max(5.0, self.left() - 5.0), eval_every=s.goal_eval_every,
                             eval_samples=s.eval_samples, log_every=s.goal_eval_every, device=str(self.device),
                             data_dir=self.data_dir)
        summary = train(config, hooks=[Track()])
        curve[int(summary["steps"])] = round(float(summary["test_accuracy"]), 2)
        marks = [m for m in (500, 1000, 1500, s.train_steps, int(summary["steps"])) if m in curve]
        return {"market": "x".join(map(str, summary["vendors"])), "asked": f"{vendors},{vendors},{vendors}",
                "batch": s.batch, "schedule": schedule, "steps": summary["steps"],
                "settings": {"lr": DEFAULT_LR["v2"] if config.lr is None else config.lr,
                             "probe_scale": config.probe_scale, "decay": config.decay,
                             "cheap_vendors": config.cheap_vendors},
                "test_accuracy_at": {m: curve[m] for m in marks}, "curve": curve,
                "goal": {"test_accuracy": s.goal_accuracy, "within_s": s.goal_s, "reached": reached or None},
                "seconds_training": summary["seconds"], "wall_s": round(time.perf_counter() - t0, 1),
                "ms_per_step": 1e3 * summary["seconds"] / max(1, summary["steps"]),
                "target_at_2000": 97.5}

    def sweep_default(self, vendors: int, step_s: float) -> dict:
        """The default trainer's rate at this scale: the lrs of `size.sweep_lrs`, constant and cosine, train_steps each.

        The defaults were tuned at 4x4x4, batch 128 (docs/results.md, "Choosing the rates"); 8x8x64 at batch 512 has a
        better direction and may take a longer step. Each run is recorded as it ends.
        """
        out: dict[str, Any] = {"market": None, "batch": self.size.batch, "runs": {}}
        for lr in self.size.sweep_lrs:
            for schedule in ("constant", "cosine"):
                if self.left() < self.size.train_steps * step_s * 1.1 + 10:
                    out["runs"][f"lr {lr:g} {schedule}"] = "skipped: budget spent"
                    continue
                try:
                    run = self.train_default(vendors, schedule, step_s, lr=lr, extend=False)
                except Exception as e:  # noqa: BLE001 - one failed run must not cost the others their figures
                    out["runs"][f"lr {lr:g} {schedule}"] = f"error: {type(e).__name__}: {str(e).strip()[:200]}"
                    continue
                out["market"] = run["market"]
                out["runs"][f"lr {lr:g} {schedule}"] = {k: run[k] for k in ("test_accuracy_at", "steps", "ms_per_step")}
                self.results["parts"]["v2_sweep"] = {"status": "running", **out}
                self.write()
        return out

    def backprop(self) -> dict:
        from experiments.lib.baselines import BackpropConfig, train_backprop

        out = {}
        for algorithm in ("adam", "sgd"):
            s = self.size
            config = BackpropConfig(algorithm=algorithm, norm="instance", batch=s.batch, steps=s.backprop_steps,
                                    max_seconds=max(5.0, self.left() / 2), eval_every=s.eval_every,
                                    eval_samples=s.eval_samples, device=str(self.device), data_dir=self.data_dir)
            summary = train_backprop(config)
            out[algorithm] = {"steps": summary["steps"], "test_accuracy": summary["test_accuracy"],
                              "seconds": summary["seconds"], "lr": config.learning_rate,
                              "ms_per_step": 1e3 * summary["seconds"] / max(1, summary["steps"])}
        return out

    def continual(self, experiment: str, checkpoint: Path, steps: int, cap_s: float) -> dict:
        """A published continual experiment from a V2 checkpoint; fewer steps if `cap_s` (or the budget) is short."""
        from marketplace.continual.experiment import ContinualConfig, run_experiment
        from marketplace.training import Hook

        curve: dict[int, dict] = {}

        class Track(Hook):
            def on_step(self, metrics):
                if "val_new_accuracy" in metrics:
                    curve[int(metrics["step"])] = {k: round(v, 2) for k, v in metrics.items()
                                                   if k in ("val_old_accuracy", "val_new_accuracy")}

        run_steps = steps
        if steps > 200:  # time 50 steps first, then ask only for what fits
            probe = ContinualConfig(experiment=experiment, checkpoint=str(checkpoint), steps=50, eval_every=10**9,
                                    device=str(self.device), data_dir=self.data_dir, eval_samples=200,
                                    attribution="zscore")
            rate = run_experiment(probe)["steps_per_second"]
            fit = int(max(1.0, min(cap_s, self.left() - 20.0)) * rate * 0.85)  # room for the validations
            run_steps = max(1, min(steps, fit))
        config = ContinualConfig(experiment=experiment, checkpoint=str(checkpoint), steps=run_steps,
                                 eval_every=max(1, run_steps // 10), device=str(self.device),
                                 data_dir=self.data_dir, eval_samples=2000, attribution="zscore")  # as published
        summary = run_experiment(config, hooks=[Track()])
        keep = ("steps", "seconds", "steps_per_second", "val_old_start", "val_old_end", "val_new_start",
                "val_new_end", "old_drop_points", "target_met", "pretrain_test_accuracy")
        return {**{k: summary[k] for k in keep}, "asked_steps": steps, "curve": curve,
                **({"cut_to_fit_budget": True} if run_steps < steps else {})}
