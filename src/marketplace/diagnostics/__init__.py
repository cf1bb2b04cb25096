"""Diagnostics: measurements of the algorithm against a reference, not part of training.

`alignment` compares the market's V2 direction with the true gradient on the
same batch (backprop only as a measuring stick); `mean_alignment` and
`compare_alignment` average it over batches; `grid` runs the table of
docs/alignment.md.
"""

from .alignment import (Alignment, AlignmentSummary, alignment, best_path_attribution, compare_alignment,
                        market_directions, mean_alignment, projection, random_subspace_cosine, true_gradient)

__all__ = ["Alignment", "AlignmentSummary", "alignment", "best_path_attribution", "compare_alignment",
           "market_directions", "mean_alignment", "projection", "random_subspace_cosine", "true_gradient"]
