"""Tests of marketplace.continual.learner: records, delayed labels, stale seeds, outliers, state."""

import copy
import io
import json

import pytest
import torch

from marketplace import Market, V1, V2, AdaptiveV2, MarketplaceError
from marketplace.continual import ContinualLearner, UnknownRequestError, drop_beyond_std, per_example_cross_entropy
from marketplace.models import mlp
from marketplace.continual import serve


def make_learner(records=8, seed=1, **kwargs):
    torch.manual_seed(0)
    market = Market(mlp([6, 5, 3]), [3, 2])
    opt = V2(market, lr=0.05, probe_scale=1.0, per_spec=False, seed=seed)
    return ContinualLearner(opt, records=records, path_seed=seed, **kwargs)


def weights(learner):
    return torch.cat([learner.market.flat_parameters(k) for k in range(learner.market.depth)])


def test_k_labelled_requests_reconcile_exactly_as_v2():
    learner = make_learner(records=8)
    twin = copy.deepcopy(learner.optimizer)  # the same market and seeds, updated by hand
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    response = learner.serve(x, labels=y)
    assert learner.step == 1 and learner.stats["updates"] == 1
    served = serve(twin.market, twin.vendors, x, paths=response.paths)
    twin.step(per_example_cross_entropy(served.logits, y), response.paths)
    assert torch.equal(weights(learner), torch.cat([twin.market.flat_parameters(k) for k in range(2)]))
    assert all(torch.equal(a, b) for a, b in zip(learner.vendors.seeds, twin.vendors.seeds))  # seeds redrawn


def test_infer_keeps_nothing_and_recorded_losses_update_like_labels():
    """The hook of a server that keeps waiting requests in its own store: infer, then record."""
    stored, kept = make_learner(records=8), make_learner(records=8)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    response = stored.infer(x)
    assert response.ids == [] and not stored.pending and stored.stats["served"] == 8
    assert stored.record(stored.loss_fn(response.logits, y), response.paths, response.step) == 8
    kept.serve(x, labels=y)
    assert stored.step == kept.step == 1
    assert torch.equal(weights(stored), weights(kept))
    # After the update infer uses the new vendors and weights, not the stacked ones it reused during step 0.
    again = stored.infer(x)
    reference = serve(kept.market, kept.vendors, x, paths=again.paths)
    assert again.step == 1 and torch.allclose(again.logits, reference.logits, atol=1e-6)


def test_delayed_labels_in_any_order_give_the_same_update():
    now, later = make_learner(), make_learner()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    now.serve(x, labels=y)
    response = later.serve(x)  # unlabelled: waits with logits and input
    assert later.stats["recorded"] == 0 and len(later.pending) == 8
    assert torch.equal(later.pending[response.ids[3]].input, x[3])
    order = [5, 2, 7, 0]
    assert later.label([response.ids[i] for i in order], y[order]) == 4
    assert later.step == 0 and len(later.pending) == 4
    rest = [6, 1, 4, 3]
    later.label([response.ids[i] for i in rest], y[rest])
    assert later.step == 1 and not later.pending
    assert torch.allclose(weights(later), weights(now), rtol=0, atol=1e-6)


def test_unknown_or_repeated_ids_raise_and_record_nothing():
    learner = make_learner()
    response = learner.serve(torch.randn(3, 6), ids=["a", "b", "c"])
    with pytest.raises(UnknownRequestError, match="'zzz'"):
        learner.label(["a", "zzz"], [0, 1])
    assert learner.stats["recorded"] == 0 and len(learner.pending) == 3  # "a" still waits
    learner.label(["a"], [0])
    with pytest.raises(UnknownRequestError, match="not waiting"):
        learner.label(["a"], [0])  # labelled twice
    with pytest.raises(MarketplaceError, match="2 request ids but 1 labels"):
        learner.label(["b", "c"], [0])
    with pytest.raises(MarketplaceError, match="unique"):
        learner.serve(torch.randn(1, 6), ids=["b"])
    with pytest.raises(MarketplaceError, match=r"labels must lie in \[0, 3\)"):
        learner.label(["b"], [7])
    assert "b" in learner.pending  # a refused label leaves the request waiting
    assert response.ids == ["a", "b", "c"]


def test_records_of_older_seeds_are_discarded_never_mixed():
    learner = make_learner(records=8)
    old = learner.serve(torch.randn(4, 6))  # served under step 0, labels come late
    client_paths = torch.tensor([[0, 1], [2, 0]])
    learner.serve(torch.randn(10, 6), labels=torch.randint(0, 3, (10,)))  # 8 update, 2 surplus are stale
    assert learner.step == 1 and learner.stats["stale"] == 2 and learner._count == 0
    assert all(p.logits is None and p.input is None for p in learner.pending.values())  # freed at the update
    before = weights(learner)
    assert learner.label(old.ids, [0, 1, 2, 0]) == 0  # step-0 requests: not reconciled with step-1 seeds
    assert learner.record(torch.tensor([0.3, 0.9]), client_paths, step=0) == 0  # a client quoting step 0
    assert learner.stats["stale"] == 8 and learner._count == 0 and not learner.pending
    assert torch.equal(weights(learner), before)
    assert learner.record(torch.tensor([0.3, 0.9]), client_paths, step=learner.step) == 2  # the current step counts


def test_outliers_are_dropped_before_the_attribution():
    rule = drop_beyond_std(2.0)
    losses = torch.tensor([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 9.0])
    assert rule(losses).tolist() == [True] * 7 + [False]
    assert rule(torch.ones(4)).all()
    with pytest.raises(ValueError, match="outlier threshold"):
        drop_beyond_std(0)

    learner, twin = make_learner(records=8, outliers=2.0), make_learner()
    paths = torch.tensor([[0, 0], [1, 1], [2, 0], [0, 1], [1, 0], [2, 1], [0, 0], [1, 1]])
    learner.record(losses, paths, step=0)
    assert learner.stats["outliers"] == 1 and learner.step == 1
    twin.optimizer.step(losses[:7], paths[:7])
    assert torch.equal(weights(learner), weights(twin))


def test_state_dict_restores_buffer_pending_requests_and_paths():
    a = make_learner(records=8)
    a.serve(torch.randn(5, 6), labels=torch.randint(0, 3, (5,)))  # 5 of 8 records
    waiting = a.serve(torch.randn(3, 6))  # 3 waiting for labels
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    json.dumps({k: v for k, v in a.state_dict().items() if not isinstance(v, (torch.Tensor, list))})

    b = make_learner(records=2, seed=9)  # other settings: the state wins
    b.market.load_state_dict(a.market.state_dict())
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert b.records == 8 and b.step == a.step and len(b.pending) == 3
    for learner in (a, b):
        learner.label(waiting.ids, [2, 0, 1])  # completes K = 8: an update
        learner.serve(torch.ones(8, 6), labels=torch.zeros(8, dtype=torch.int64))
    assert a.step == b.step == 2
    assert torch.equal(weights(a), weights(b))
    assert a.stats == b.stats


def test_arguments_are_validated():
    torch.manual_seed(0)
    market = Market(mlp([6, 5, 3]), [3, 2])
    with pytest.raises(ValueError, match="records"):
        ContinualLearner(V2(market), records=1)
    with pytest.raises(ValueError, match="AdaptiveV2"):
        ContinualLearner(AdaptiveV2(market))
    with pytest.raises(TypeError):
        ContinualLearner(market)
    ContinualLearner(V1(market, lr=0.01), records=4).serve(torch.randn(4, 6), labels=torch.zeros(4, dtype=torch.int64))


def test_a_new_class_is_learned_from_served_requests():
    """Clusters 0-3 pre-trained with V2; class 4 then arrives mixed into the served stream.

    Margin: the old classes may lose at most 2 points of validation accuracy.
    """
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 1.5

    def sample(classes, n):
        y = classes[torch.randint(0, len(classes), (n,), generator=g)]
        return centers[y] + torch.randn(n, 16, generator=g), y

    old, new = torch.arange(4), torch.tensor([4])
    val_old, val_new = sample(old, 1000), sample(new, 300)
    torch.manual_seed(0)
    market = Market(mlp([16, 32, 5]), [4, 4])
    pre = V2(market, lr=0.05, probe_scale=0.1, seed=0)
    for _ in range(100):  # pre-training on the old classes only: every path, as `marketplace train` does
        x, y = sample(old, 64)
        out = market.evaluate(x, pre.vendors)
        pre.step(torch.stack([per_example_cross_entropy(p, y).mean() for p in out.products]), out.paths)

    def accuracy(data):
        return 100.0 * float((market(data[0]).argmax(1) == data[1]).float().mean())

    old_start, new_start = accuracy(val_old), accuracy(val_new)
    assert old_start > 80 and new_start < 20
    learner = ContinualLearner(V2(market, lr=0.3, probe_scale=1.0, per_spec=False, seed=1), records=64)
    for _ in range(150):  # 56 old + 8 new requests per step, one update each
        (xo, yo), (xn, yn) = sample(old, 56), sample(new, 8)
        learner.serve(torch.cat([xo, xn]), labels=torch.cat([yo, yn]))
    assert learner.stats["updates"] == 150
    assert accuracy(val_new) > new_start + 50
    assert accuracy(val_old) >= old_start - 2.0


# -- the published experiments, in a tiny form --------------------------------


def test_a_baseline_answers_with_the_base_weights_and_learns_from_loss_differences():
    learner, twin = make_learner(records=8, baseline=True), make_learner(records=8)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with torch.no_grad():
        base = learner.market(x)
    response = learner.serve(x, labels=y)
    assert torch.equal(response.logits, base)  # the answer pays nothing for the perturbations
    reference = serve(twin.market, twin.vendors, x, paths=response.paths).logits
    assert torch.allclose(response.path_logits, reference, atol=1e-6)
    twin.record(per_example_cross_entropy(reference, y) - per_example_cross_entropy(base, y), response.paths, 0)
    assert learner.step == twin.step == 1
    assert torch.allclose(weights(learner), weights(twin), rtol=0, atol=1e-6)


def test_a_baseline_survives_delayed_labels_and_a_saved_state():
    now, later = make_learner(baseline=True), make_learner(baseline=True)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    now.serve(x, labels=y)
    waiting = later.serve(x)
    restored = make_learner(baseline=True)
    restored.load_state_dict(later.state_dict())
    for learner in (later, restored):
        learner.label(waiting.ids[::-1], y.flip(0))
        assert learner.step == 1
        assert torch.allclose(weights(learner), weights(now), rtol=0, atol=1e-6)
    with pytest.raises(MarketplaceError, match="baseline"):
        make_learner().load_state_dict(later.state_dict())
