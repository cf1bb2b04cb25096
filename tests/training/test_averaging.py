"""A run that scores its averaged weights: the average is an EMA of the steps, resumes exactly, and inference loads it."""

from __future__ import annotations

import pytest
import torch

from marketplace.errors import MarketplaceError
from marketplace.training import Trainer, load_checkpoint, market_from_checkpoint
from marketplace.training.averaging import averaged_weights
from marketplace.training.hooks import final_line, market_line

from helpers import assert_same_weights
from helpers import train_config as config

pytestmark = pytest.mark.usefixtures("small_data")


def test_the_average_is_an_exponential_moving_average_of_the_weights_after_each_step(small_data):
    trainer = Trainer(config(small_data, vendors=(2, 2, 2), steps=3, average=4))
    expected = {k: v.clone() for k, v in trainer.market.state_dict().items()}
    for step in range(3):
        trainer.step(*trainer.batch(step))
        trainer.averaged.update_parameters(trainer.market)
        for k, v in trainer.market.state_dict().items():
            expected[k] = 0.75 * expected[k] + 0.25 * v
    for k, v in trainer.averaged.module.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert not torch.equal(trainer.averaged.module.state_dict()[k], trainer.market.state_dict()[k])
    assert trainer.evaluated is trainer.averaged.module


def test_averaging_leaves_the_training_unchanged_and_scores_the_average(small_data):
    plain = Trainer(config(small_data, vendors=(2, 2, 2), steps=4))
    plain.run()
    averaged = Trainer(config(small_data, vendors=(2, 2, 2), steps=4, average=3))
    summary = averaged.run()
    assert_same_weights(plain.market.state_dict(), averaged.market.state_dict())  # the market steps as before
    assert summary["averaged_over_steps"] == 3
    assert "weights averaged over about 3 steps" in final_line(summary)
    line = market_line(averaged.config, averaged.market)
    assert "scoring the weights averaged over about 3 steps" in line and "leans on the first weights" not in line
    longer = config(small_data, vendors=(2, 2, 2), steps=4, average=1000)
    assert "more than the run's 4: the average leans on the first weights" in market_line(longer, averaged.market)


def test_resume_continues_the_average_exactly_and_inference_loads_it(small_data, tmp_path):
    run = dict(vendors=(2, 2, 2), average=3)
    straight = Trainer(config(small_data, **run, steps=4))
    straight.run()
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, **run, steps=2, checkpoint=str(ckpt))).run()
    resumed = Trainer(config(small_data, **run, steps=4, checkpoint=str(ckpt), resume=True))
    summary = resumed.run()
    assert_same_weights(straight.market.state_dict(), resumed.market.state_dict())
    assert_same_weights(straight.averaged.state_dict(), resumed.averaged.state_dict())
    assert summary["test_accuracy"] == straight.test_accuracy

    saved = load_checkpoint(ckpt)
    assert_same_weights(saved.model, {k: v.cpu() for k, v in resumed.market.state_dict().items()})
    loaded = market_from_checkpoint(saved, str(ckpt), torch.device("cpu"))  # what evaluate and serve read
    assert_same_weights(loaded.state_dict(), averaged_weights(saved.optimizer))
    assert_same_weights(loaded.state_dict(), {k: v.cpu() for k, v in resumed.averaged.module.state_dict().items()})


def test_a_run_without_the_average_does_not_resume_with_one(small_data, tmp_path):
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, vendors=(2, 2, 2), steps=1, checkpoint=str(ckpt))).run()
    with pytest.raises(MarketplaceError, match="average=None, not 3"):
        Trainer(config(small_data, vendors=(2, 2, 2), steps=2, checkpoint=str(ckpt), resume=True, average=3))


def test_an_average_over_fewer_than_two_steps_is_refused(small_data):
    with pytest.raises(MarketplaceError, match="average must be >= 2"):
        Trainer(config(small_data, vendors=(2, 2, 2), steps=1, average=1))
