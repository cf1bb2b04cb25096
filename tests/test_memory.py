"""The allocator setting of CPU runs (marketplace.memory): freed memory is reused, not faulted in afresh."""

import subprocess
import sys

import pytest

_CHILD = """
import resource, sys, torch
from marketplace.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
torch.ones(32 * 2**20).sum()  # 128 MB once: room for what follows
faults = []
for i in range(6):  # 64 MB blocks, freed at once: glibc maps fresh pages each time unless told to keep them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reusing_freed_memory_stops_fresh_page_faults():
    def faults(setting):
        out = subprocess.run([sys.executable, "-c", _CHILD, setting], capture_output=True, text=True, check=True)
        return [int(f) for f in out.stdout.split()]

    default, reuse = faults("default"), faults("reuse")
    assert min(default) > 10_000  # 64 MB of 4 KB pages, faulted in afresh every time
    # kept memory is reused; now and then small blocks in between fragment the heap and one block is new
    assert sum(f < 1_000 for f in reuse) >= len(reuse) // 2, reuse
