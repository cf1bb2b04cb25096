"""A run that validates an average of its weights: the average asked for, learning unchanged, an exact resume."""

import pytest
import torch

from marketplace.continual.config import ContinualConfig
from marketplace.continual.experiment import ContinualRun, run_experiment
from marketplace.continual.report import plot_log, read_log
from marketplace.training import JsonLog, load_checkpoint
from marketplace.training.averaging import AVERAGE

from test_continual_resume import base, config as resume_config  # noqa: F401 (base: the fixture)


def config(base, data_dir, out, **kw) -> ContinualConfig:
    return resume_config(base, data_dir, out, **{"average": 4, "augment": False, **kw})


class Weights:
    """A hook that keeps the served weights after every step."""

    def on_start(self, config, market, step):
        self.market, self.seen = market, [{k: v.clone() for k, v in market.state_dict().items()}]

    def on_step(self, metrics):
        if metrics.get("event", "step") == "step" and metrics["step"] > 0:
            self.seen.append({k: v.clone() for k, v in self.market.state_dict().items()})

    def on_end(self, summary):
        pass


def averaged(checkpoint) -> dict[str, torch.Tensor]:
    prefix = AVERAGE + "module/"
    return {k[len(prefix):].replace("/", "."): v for k, v in checkpoint.optimizer.items() if k.startswith(prefix)}


def test_the_average_is_an_exponential_one_and_leaves_learning_alone(base, small_data, tmp_path):
    weights, log = Weights(), tmp_path / "a.jsonl"
    summary = run_experiment(config(base, small_data, tmp_path / "a"), [weights, JsonLog(log)])
    plain = run_experiment(config(base, small_data, tmp_path / "b", average=None))
    a, b = (load_checkpoint(tmp_path / d / "run.safetensors") for d in "ab")
    assert all(torch.equal(a.model[k], b.model[k]) for k in b.model)  # the served weights learn as without it
    assert len(weights.seen) == 7
    expected = {k: v.clone() for k, v in weights.seen[0].items()}
    for w in weights.seen[1:]:  # decay 1 - 1/4, from the base
        for k, v in expected.items():
            if v.is_floating_point():
                v.mul_(0.75).add_(w[k], alpha=0.25)
    got = averaged(a)
    moved = False
    for key, value in expected.items():
        if value.is_floating_point():
            assert torch.allclose(got[key], value, atol=1e-6), key
            moved |= not torch.equal(got[key], a.model[key])
    assert moved  # the average is not the served weights
    assert summary["served_val_new_end"] == plain["val_new_end"]
    assert summary["served_val_old_end"] == plain["val_old_end"]
    assert summary["averaged_over_steps"] == 4 and plain["averaged_over_steps"] is None
    steps, _, _ = read_log(log)  # every validation logs both: the average's and the served weights'
    validated = [r for r in steps if "val_new_accuracy" in r]
    assert [r["step"] for r in validated] == [0, 3, 6] and all("served_val_new_accuracy" in r for r in validated)
    assert plot_log(log, tmp_path / "a.png").stat().st_size > 0


def test_an_averaged_run_resumes_exactly_and_only_with_the_same_average(base, small_data, tmp_path):
    whole = run_experiment(config(base, small_data, tmp_path / "a"))
    run_experiment(config(base, small_data, tmp_path / "b", steps=3))  # saved at step 3, off the every-2 grid
    rest = ContinualRun(config(base, small_data, tmp_path / "b", resume=True)).run()
    a, b = (load_checkpoint(tmp_path / d / "run.safetensors") for d in "ab")
    got_a, got_b = averaged(a), averaged(b)
    assert got_a and all(torch.equal(got_a[k], got_b[k]) for k in got_a)
    assert rest["val_old_end"] == whole["val_old_end"] and rest["val_new_end"] == whole["val_new_end"]
    with pytest.raises(Exception, match="average=4 \\(now 8\\)"):
        ContinualRun(config(base, small_data, tmp_path / "b", resume=True, steps=8, average=8))


def test_an_average_over_fewer_than_two_steps_is_refused():
    for bad in (1, 0, -5):
        with pytest.raises(Exception, match=f"average must be >= 2, got {bad}"):
            ContinualConfig(average=bad).validate()
