"""MLflow tracking as a training hook: the whole config, metrics per step and the git commit.

    from marketplace.training.tracking import MlflowLogger
    train(config, hooks=[JsonLog("runs/a.jsonl"), MlflowLogger(experiment="mine")])

mlflow is an optional dependency (`pip install marketplace-ml[mlflow]`),
imported only when a run starts. Where runs go, first match wins: the
`tracking_uri` argument, $MLFLOW_TRACKING_URI, a file store in ./mlruns
(`mlflow ui --backend-store-uri ./mlruns` shows it). Recent MLflow versions
refuse file stores unless MLFLOW_ALLOW_FILE_STORE=true; the logger sets it,
for its own default store only, when it is unset.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import MarketplaceError
from .hooks import Hook

def git_commit(where: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding `where` (default: this package), or (None, None)."""
    cwd = Path(where) if where else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a file store in ./mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / "mlruns").resolve().as_uri()


def flat_params(config: Any, prefix: str = "") -> dict[str, str]:
    """A config dataclass (or dict) as MLflow params: one string per field, nested dicts dotted."""
    items = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    out: dict[str, str] = {}
    for key, value in items.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        elif isinstance(value, (tuple, list)):
            out[f"{prefix}{key}"] = ",".join(map(str, value)) if value else "-"
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _import_mlflow():
    try:
        import mlflow  # noqa: F401  (heavy: imported only when a run starts)
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise MarketplaceError(
            "MLflow tracking needs mlflow: `uv sync --extra mlflow` or `pip install marketplace-ml[mlflow]` "
            "(or run without tracking)"
        ) from e
    return MlflowClient


class MlflowLogger(Hook):
    """Logs one training run to MLflow: params (the whole config), per-step metrics, commit, summary.

    experiment: the MLflow experiment name (created when missing). run_name:
    shown in the UI. tags / params: extra ones (e.g. the experiment's name).
    artifacts: files logged when the run ends (e.g. its JSON-lines log).
    Works with the market `Trainer` and the backprop baselines alike.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "marketplace",
                 run_name: str | None = None, tags: dict[str, str] | None = None,
                 params: dict[str, Any] | None = None, artifacts: Sequence[str | os.PathLike] = ()):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment, self.run_name = experiment, run_name
        self.tags, self.params = dict(tags or {}), dict(params or {})
        self.artifacts = [Path(a) for a in artifacts]
        self.client = None
        self.run_id: str | None = None  # kept after the run ends, for the caller
        self.active = False

    # -- hook events ---------------------------------------------------------

    def on_start(self, config, market, start_step: int) -> None:
        if self.tracking_uri.startswith("file:") and "MLFLOW_TRACKING_URI" not in os.environ:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # our default store; see module doc
        client = _import_mlflow()(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(self.experiment)
            except Exception:  # created meanwhile by a concurrent run
                experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
        else:
            experiment_id = experiment.experiment_id
        commit, dirty = git_commit()
        tags = {"marketplace.algorithm": str(getattr(config, "algorithm", "")), **self.tags}
        if commit:
            tags["mlflow.source.git.commit"] = commit
            tags["git_dirty"] = str(dirty).lower()
        run = client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.client, self.run_id, self.active = client, run.info.run_id, True
        params = flat_params(config)
        params.update({k: str(v) for k, v in self.params.items()})
        params["parameters"] = str(sum(p.numel() for p in market.parameters()))
        params["start_step"] = str(start_step)
        self._log(params=params)

    def on_step(self, metrics: dict[str, Any]) -> None:
        if not self.active or len(metrics) <= 2:  # only step and seconds: nothing measured
            return
        step = int(metrics["step"])
        self._log(metrics={k: v for k, v in metrics.items() if k != "step"}, step=step)

    def on_end(self, summary: dict[str, Any]) -> None:
        if not self.active:
            return
        self._log(metrics={"final_test_accuracy": summary["test_accuracy"],
                           "final_test_loss": summary["test_loss"], "total_seconds": summary["seconds"]},
                  step=int(summary["steps"]))
        for path in self.artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.close("FINISHED")

    def close(self, status: str = "FAILED") -> None:
        """End the run (an experiment runner calls this with FAILED when training raised)."""
        if self.active:
            self.client.set_terminated(self.run_id, status)
            self.active = False

    # -- helpers ---------------------------------------------------------------

    def _log(self, metrics: dict[str, Any] | None = None, params: dict[str, str] | None = None,
             step: int = 0) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        batch_metrics = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)]
        batch_params = [Param(k, v[:6000]) for k, v in (params or {}).items()]
        if batch_metrics or batch_params:
            self.client.log_batch(self.run_id, metrics=batch_metrics, params=batch_params)
