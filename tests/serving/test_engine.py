"""Tests of marketplace.serving.engine without HTTP: the update rule, stale records, recovery by replay."""


import pytest
import torch

from marketplace import Market, MarketplaceError
from marketplace.continual import ContinualLearner
from marketplace.models import mlp
from marketplace.optim import V2
from marketplace.serving import RequestError, ServerConfig, engine_from_market

SHAPE = (6,)


def market(seed=0):
    torch.manual_seed(seed)
    return Market(mlp([6, 5, 3]), [3, 2])


def engine(store, m=None, **kw):
    config = ServerConfig(records=4, lr=0.05, seed=1, store=str(store), token="t", checkpoint_every=100, **kw)
    return engine_from_market(m if m is not None else market(), config, SHAPE)


def weights(m):
    return torch.cat([m.flat_parameters(k) for k in range(m.depth)])


def stream(e, steps, seed=0):
    """Serve and label `steps` batches of 3 requests each (labels of one batch arrive reversed)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(3, 6, generator=g), torch.randint(0, 3, (3,), generator=g)
        out = e.predict(x)
        e.feedback(out.ids[::-1], y.flip(0).tolist())


@pytest.mark.parametrize("balanced", [True, False])
def test_feedback_updates_exactly_as_the_in_process_learner(tmp_path, balanced):
    e = engine(tmp_path, balanced=balanced)
    twin = ContinualLearner(V2(market(), lr=0.05, probe_scale=1.0, per_spec=False, decay=0.0, seed=1,
                                  attribution=ServerConfig.attribution), records=4,
                            path_seed=1, balanced=balanced)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(2, 6, generator=g), torch.randint(0, 3, (2,), generator=g)
        out = e.predict(x)
        e.feedback(out.ids, y.tolist())
        twin.serve(x, labels=y)
    assert e.step == twin.step == 2
    assert torch.equal(weights(e.market), weights(twin.market))


def test_late_feedback_is_stored_and_counted_stale_never_learned(tmp_path):
    e = engine(tmp_path)
    late = e.predict(torch.randn(1, 6))
    stream(e, 2)  # 6 records: one update
    answer = e.feedback(late.ids, [1])
    assert answer == {"stored": 1, "recorded": 0, "stale": 1, "updates": 0, "step": 1}
    assert e.store.counts()["feedback"] == 7


def test_a_label_whose_row_was_pruned_is_acknowledged_stale_and_replays_the_same(tmp_path):
    """The update forgets the rows of the step it superseded; their labels still count, as stale, once."""
    e = engine(tmp_path)
    late = e.predict(torch.randn(2, 6))
    stream(e, 2)  # 6 records: one update, which prunes step 0's rows
    assert e.step == 1 and e.store.served(late.ids) == {}
    with pytest.raises(RequestError) as info:
        e.feedback(late.ids[:1], [3])  # the label is still checked
    assert info.value.status == 422
    fresh = e.predict(torch.randn(1, 6))
    answer = e.feedback([late.ids[0], fresh.ids[0]], [1, 2])
    assert answer == {"stored": 2, "recorded": 1, "stale": 1, "updates": 0, "step": 1}
    with pytest.raises(RequestError) as info:
        e.feedback(late.ids[:1], [1])
    assert info.value.status == 409
    with pytest.raises(RequestError) as info:
        e.feedback([e.store.next_id], [1])
    assert info.value.status == 404
    before = (weights(e.market).clone(), e.step, dict(e.learner.stats), e.learner.buffered)
    del e  # a crash: replay counts the pruned label stale again
    again = engine(tmp_path)
    assert torch.equal(weights(again.market), before[0])
    assert (again.step, dict(again.learner.stats), again.learner.buffered) == before[1:]


def test_unlabelled_requests_are_kept_up_to_keep_served(tmp_path):
    e = engine(tmp_path, keep_served=8)
    first = e.predict(torch.randn(1, 6))
    for _ in range(20):
        e.predict(torch.randn(1, 6))
    assert e.store.kept <= 9 and e.learner.stats["served"] == 21  # 8 and an eighth of 8 between prunes
    assert e.feedback(first.ids, [0])["stale"] == 1


@pytest.mark.parametrize("checkpoint_after", [None, 2])
def test_a_crash_loses_nothing_acknowledged_and_replays_to_the_same_state(tmp_path, checkpoint_after):
    """Kill (no close), reopen the same store: the same weights, step, seeds and counters."""
    e = engine(tmp_path)
    stream(e, 2)
    if checkpoint_after:
        e.checkpoint()
    stream(e, 5, seed=1)
    before = (weights(e.market).clone(), e.step, dict(e.learner.stats), e.learner.buffered)
    assert e.step >= 3
    del e  # a crash: the learner's last state is never written
    again = engine(tmp_path)
    assert torch.equal(weights(again.market), before[0])
    assert (again.step, dict(again.learner.stats), again.learner.buffered) == before[1:]
    assert again.replayed == (21 if checkpoint_after is None else 15)
    stream(again, 1, seed=2)  # and it goes on: new ids, same store
    assert again.store.counts()["feedback"] == 24


def test_bad_feedback_and_reports_are_refused_with_their_status(tmp_path):
    e = engine(tmp_path)
    out = e.predict(torch.randn(2, 6))
    cases = [(lambda: e.feedback([99], [0]), 404), (lambda: e.feedback(out.ids[:1] * 2, [0, 0]), 409),
             (lambda: e.feedback(out.ids[:1], [3]), 422),
             (lambda: e.report([5], torch.tensor([[0, 0]]), torch.tensor([1.0])), 422),
             (lambda: e.report([0], torch.tensor([[3, 0]]), torch.tensor([1.0])), 422),
             (lambda: e.report([0], torch.tensor([[0, 0]]), torch.tensor([float("nan")])), 422)]
    for call, status in cases:
        with pytest.raises(RequestError) as info:
            call()
        assert info.value.status == status, str(info.value)
    e.feedback(out.ids[:1], [0])
    with pytest.raises(RequestError) as info:
        e.feedback(out.ids[:1], [0])
    assert info.value.status == 409 and "already" in str(info.value)
    assert e.store.counts()["feedback"] == 1


def test_reports_of_a_superseded_step_are_refused_and_change_no_counter(tmp_path):
    e = engine(tmp_path)
    e.report([0] * 4, torch.zeros(4, 2, dtype=torch.int64), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert e.step == 1
    with pytest.raises(RequestError) as info:
        e.report([0], torch.zeros(1, 2, dtype=torch.int64), torch.tensor([1.0]))
    assert info.value.status == 409 and e.learner.stats["stale"] == 0  # nothing stored, nothing counted
    assert e.store.counts()["report"] == 4


def test_a_store_made_for_other_weights_is_refused(tmp_path):
    engine(tmp_path).close()
    with pytest.raises(MarketplaceError, match="other starting weights"):
        engine(tmp_path, market(seed=1))


def test_learning_off_serves_the_base_weights_and_takes_no_feedback(tmp_path):
    e = engine(tmp_path / "off", learning=False)
    x = torch.randn(3, 6)
    out = e.predict(x)
    assert out.ids is None and torch.equal(out.logits, e.market(x)) and not (tmp_path / "off").exists()
    with pytest.raises(RequestError, match="learning is off"):
        e.feedback([0], [0])


def test_a_baseline_server_answers_with_the_base_weights_and_learns_like_the_in_process_learner(tmp_path):
    e = engine(tmp_path, baseline=True)
    twin = ContinualLearner(V2(market(), lr=0.05, probe_scale=1.0, per_spec=False, decay=0.0, seed=1,
                                  attribution=ServerConfig.attribution), records=4,
                            path_seed=1, baseline=True, balanced=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(2, 6, generator=g), torch.randint(0, 3, (2,), generator=g)
        with torch.no_grad():
            base = e.market(x)
        out = e.predict(x)
        assert torch.equal(out.logits, base)
        e.feedback(out.ids[::-1], y.flip(0).tolist())
        twin.serve(x, labels=y)
    assert e.step == twin.step == 2
    assert torch.allclose(weights(e.market), weights(twin.market), rtol=0, atol=1e-6)
    before = weights(e.market).clone()
    del e  # a crash: replay recomputes nothing, it reads the stored differences
    assert torch.equal(weights(engine(tmp_path, baseline=True).market), before)
    with pytest.raises(MarketplaceError, match="baseline"):
        engine(tmp_path)  # its records are differences: a server without the baseline may not take the store
