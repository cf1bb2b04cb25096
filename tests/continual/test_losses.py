"""Tests of marketplace.continual.losses: what a record learns from."""

import pytest
import torch

from marketplace import MarketplaceError
from marketplace.continual import drop_beyond_std, per_example_cross_entropy, relative_losses


def test_relative_losses_cancel_what_the_path_shares_with_the_base_weights():
    g = torch.Generator().manual_seed(0)
    base, labels = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.equal(relative_losses(per_example_cross_entropy, base, labels, base), torch.zeros(6))
    logits = base + 0.1 * torch.randn(6, 4, generator=g)
    expected = per_example_cross_entropy(logits, labels) - per_example_cross_entropy(base, labels)
    assert torch.equal(relative_losses(per_example_cross_entropy, logits, labels, base), expected)
    assert torch.equal(relative_losses(per_example_cross_entropy, logits, labels),
                       per_example_cross_entropy(logits, labels))


def test_labels_out_of_range_and_bad_thresholds_are_one_line_errors():
    with pytest.raises(MarketplaceError, match=r"labels must lie in \[0, 4\)"):
        per_example_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="outlier threshold"):
        drop_beyond_std(0)
    keep = drop_beyond_std(1.0)(torch.tensor([0.0, 0.1, -0.1, 5.0]))
    assert keep.tolist() == [True, True, True, False]
