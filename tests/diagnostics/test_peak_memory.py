"""Peak tensor memory of a call: known allocations read back, freed ones still counted, stderr left clean."""

import warnings

import pytest
import torch

from marketplace.diagnostics import peak_tensor_bytes
from marketplace.errors import MarketplaceError

N = 2**20  # float32 numbers: 4 MiB
SLACK = 2**16  # bytes torch may allocate beside the tensors themselves


def test_a_kept_tensor_is_its_bytes(device="cpu"):
    kept = []
    peak = peak_tensor_bytes(lambda: kept.append(torch.ones(N, device=device)), device)
    assert 4 * N <= peak < 4 * N + SLACK


def test_a_freed_temporary_still_counts():
    def fn():
        a = torch.ones(N)
        b = a * 2  # both live here: 8 MiB
        del a, b
        torch.ones(N // 4)  # 1 MiB, freed at once: below the peak

    assert 8 * N <= peak_tensor_bytes(fn) < 8 * N + SLACK


def test_on_the_cpu_freeing_what_was_live_before_is_not_credited():
    """The profiler reports such a free when an earlier profile saw its address: never credited (CUDA would say 0)."""
    held = [torch.ones(N)]

    def fn():
        held.pop()
        held.append(torch.ones(N))

    for _ in range(10):  # from the second call on, the freed tensor was made under an earlier profile
        assert 4 * N <= peak_tensor_bytes(fn) < 4 * N + SLACK


def test_warnings_reach_the_caller_and_the_profiler_log_does_not(capfd):
    def fn():
        warnings.warn("from inside the step", UserWarning)
        torch.ones(N)

    with pytest.warns(UserWarning, match="from inside the step"):
        assert peak_tensor_bytes(fn) >= 4 * N
    assert capfd.readouterr().err == ""


def test_other_devices_are_refused():
    with pytest.raises(MarketplaceError, match="cpu or cuda"):
        peak_tensor_bytes(lambda: None, "meta")


def test_ops_are_recorded_again_after_the_measure():
    peak_tensor_bytes(lambda: torch.ones(N))
    with torch.autograd.profiler.profile() as prof:
        torch.ones(N)
    assert any(e.name == "aten::ones" for e in prof.function_events)


@pytest.mark.cuda
def test_a_kept_tensor_is_its_bytes_on_cuda():
    test_a_kept_tensor_is_its_bytes("cuda")


def test_frees_count_only_against_allocations_of_the_call():
    from marketplace.diagnostics.memory import running_peak

    assert running_peak([-8, 4, 4, -4, 2]) == 8  # the first free was of memory live before: not credited
    assert running_peak([4, -4, -4, 4]) == 4
    assert running_peak([]) == 0
