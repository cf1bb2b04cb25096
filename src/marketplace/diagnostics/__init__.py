"""Diagnostics: measurements of the algorithm against a reference, not part of training.

`alignment` compares the market's V2 direction with the true gradient on the
same batch (backprop only as a measuring stick); `mean_alignment` and
`compare_alignment` average it over batches; `grid` runs the table of
docs/alignment.md. `peak_tensor_bytes` is the most tensor memory one call (a
step) holds above what was live before it, on the CPU or CUDA.
"""

from .alignment import (Alignment, AlignmentSummary, alignment, best_path_attribution, compare_alignment,
                        market_directions, mean_alignment, projection, random_subspace_cosine, true_gradient)
from .memory import peak_tensor_bytes

__all__ = ["Alignment", "AlignmentSummary", "alignment", "best_path_attribution", "compare_alignment",
           "market_directions", "mean_alignment", "peak_tensor_bytes", "projection", "random_subspace_cosine",
           "true_gradient"]
