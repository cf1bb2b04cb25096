import torch
import torch.nn.functional as F
import pytest

from marketplace import (Market, MarketplaceError, NonFiniteLossError, draw_vendors, path_losses,
                         reconcile, standardized_attribution, unit_directions, vendor_attribution)
from marketplace.functional import best_path, check_losses
from marketplace.models import mlp


def test_reconciled_direction_equals_the_formula_by_hand():
    """R_k = sum_i A_i delta_{k, path_i[k]}, written as the direct O(paths x params) sum."""
    market = Market(mlp([3, 2, 2]), vendors=[3, 2])
    vendors = draw_vendors(11, 0, market.vendor_counts, [0.1, 0.2])
    paths = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]])
    losses = torch.tensor([0.9, 1.3, 0.7, 1.1, 1.0, 0.4])

    mu, sd = losses.mean(), losses.std(unbiased=False)
    by_hand_a = [-(l - mu) / sd for l in losses.tolist()]
    attribution = standardized_attribution(losses)
    torch.testing.assert_close(attribution, torch.tensor(by_hand_a))

    per_vendor = vendor_attribution(attribution, paths, market.vendor_counts)
    torch.testing.assert_close(per_vendor[0], torch.tensor([by_hand_a[0] + by_hand_a[1],
                                                            by_hand_a[2] + by_hand_a[3],
                                                            by_hand_a[4] + by_hand_a[5]]))
    for k in range(2):
        deltas = vendors.deltas(k, market.layouts[k].numel, torch.device("cpu"))
        by_hand = sum(a * deltas[p[k]] for a, p in zip(by_hand_a, paths.tolist()))
        torch.testing.assert_close(reconcile(per_vendor[k], deltas), by_hand, rtol=1e-5, atol=1e-7)


def test_unit_directions_per_spec_and_whole_model():
    r = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0, 12.0])]
    per_spec = unit_directions(r, per_spec=True)
    torch.testing.assert_close(per_spec[0], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(per_spec[1], torch.tensor([0.0, 0.0, 1.0]))
    whole = unit_directions(r, per_spec=False)
    torch.testing.assert_close(whole[0], torch.tensor([3.0, 4.0]) / 13)
    torch.testing.assert_close(whole[1], torch.tensor([0.0, 0.0, 12.0]) / 13)
    assert torch.equal(unit_directions([torch.zeros(3)])[0], torch.zeros(3))  # no NaN from 0/0


def test_equal_losses_attribute_nothing():
    assert torch.equal(standardized_attribution(torch.full((5,), 2.0)), torch.zeros(5))
    assert torch.equal(standardized_attribution(torch.tensor([1.0])), torch.zeros(1))


def test_path_losses_is_cross_entropy_per_path():
    logits = torch.randn(4, 6, 3)
    target = torch.randint(0, 3, (6,))
    expected = torch.stack([F.cross_entropy(logits[p], target) for p in range(4)])
    torch.testing.assert_close(path_losses(logits, target), expected)
    with pytest.raises(MarketplaceError, match="expected 6 targets"):
        path_losses(logits, target[:5])
    with pytest.raises(MarketplaceError, match=r"targets must lie in \[0, 3\)"):
        path_losses(logits, target + 3)


def test_best_path_and_loss_checks():
    paths = torch.tensor([[0, 0], [1, 0], [1, 1]])
    assert best_path(torch.tensor([0.5, 0.2, 0.9]), paths).tolist() == [1, 0]
    with pytest.raises(NonFiniteLossError, match=r"1 of 3 path losses.*path \[1, 1\]"):
        check_losses(torch.tensor([0.5, 0.2, float("nan")]), paths)
    with pytest.raises(MarketplaceError, match="expected losses"):
        check_losses(torch.zeros(2), paths)


def test_centered_ranks_order_ties_and_equal_losses():
    from marketplace.functional import centered_rank_attribution

    a = centered_rank_attribution(torch.tensor([0.3, 0.1, 0.9, 0.5, 0.7]))
    evenly = torch.tensor([1.0, 2.0, -2.0, 0.0, -1.0])  # lowest loss highest, evenly spaced, mean 0
    torch.testing.assert_close(a, evenly / evenly.std(unbiased=False))  # std 1, the scale of the z-scores
    # only the order counts: a monotone transform of the losses changes nothing
    losses = torch.rand(17, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(centered_rank_attribution(losses), centered_rank_attribution(losses.exp() * 5))
    ties = centered_rank_attribution(torch.tensor([1.0, 2.0, 2.0, 3.0]))
    tied = torch.tensor([1.0, 0.0, 0.0, -1.0])  # tied paths share their rank
    torch.testing.assert_close(ties, tied / tied.std(unbiased=False))
    assert not centered_rank_attribution(torch.full((6,), 2.0)).any()
    assert not centered_rank_attribution(torch.tensor([1.0])).any()
