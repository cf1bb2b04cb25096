"""Counter-based random numbers that are bit-identical on every device.

Vendors exchange seeds, never weights, so a seed must expand to the same
perturbation on a CPU, a GPU or another process. torch's own generators do
not promise that across devices; Philox4x32-10 (Salmon et al., "Parallel
random numbers: as easy as 1, 2, 3", the generator behind cuRAND) written
with int64 tensor ops does: every operation is exact integer arithmetic.

uint32 words live in int64 tensors. A 32x32-bit product can reach 2**64,
past int64, so multiplications are split into 16-bit halves (see `_mulhilo`)
and never overflow.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
ROUNDS = 10
_CPU_CHUNK = 12288  # Philox blocks per chunk on the CPU, over all seeds


def _mulhilo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * b for uint32 words `a` and constant `b`."""
    t = (a & 0xFFFF) * b  # < 2**48
    u = (a >> 16) * b  # < 2**48
    mid = ((u & 0xFFFF) << 16) + t  # < 2**49
    return (u >> 16) + (mid >> 32), mid & MASK32


def philox4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    key: tuple[torch.Tensor, torch.Tensor],
    rounds: int = ROUNDS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 block function on broadcastable int64 tensors of uint32 words.

    Returns four uint32 words (as int64 tensors) per counter.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & MASK32, (k1 + _W1) & MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def split_seed(seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Low and high uint32 words of int64 seeds (read as uint64 bit patterns)."""
    return seed & MASK32, (seed >> 32) & MASK32


def _bits(seeds: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Words of Philox blocks first..last-1 of each seed: int64 [S, 4 * (last - first)]."""
    block = torch.arange(first, last, dtype=torch.int64, device=seeds.device)
    zero = torch.zeros_like(block)
    k0, k1 = split_seed(seeds.reshape(-1, 1))
    words = philox4x32((block & MASK32, block >> 32, zero, zero), (k0, k1))
    return torch.stack(torch.broadcast_tensors(*words), dim=-1).reshape(seeds.numel(), -1)


def random_bits(seeds: torch.Tensor, offset: int, n: int) -> torch.Tensor:
    """uint32 words number `offset .. offset + n` of each seed's stream.

    seeds: int64 [S]. Returns int64 [S, n]. Word i of a stream is lane i % 4
    of the Philox block with counter (i // 4, 0, 0, 0) and key = the seed.
    On the CPU the blocks go in chunks that stay in cache: one pass over a
    large tensor per integer op is many times slower there.
    """
    first, last = offset // 4, (offset + n + 3) // 4
    chunk = last - first if seeds.device.type != "cpu" else max(256, _CPU_CHUNK // max(1, seeds.numel()))
    bits = torch.cat([_bits(seeds, b, min(b + chunk, last)) for b in range(first, last, chunk)], dim=1) \
        if last > first else torch.zeros(seeds.numel(), 0, dtype=torch.int64, device=seeds.device)
    start = offset - 4 * first
    return bits[:, start : start + n]


def uniform_pm1(seeds: torch.Tensor, n: int, offset: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Uniform values in (-1, 1), bit-exact on every device; seed 0 gives zeros.

    seeds: int64 [S] on the target device. Returns [S, n]. Each value is
    (2k + 1 - 2**23) / 2**23 for the top 23 bits k of a word: exact in float32,
    symmetric around 0, so the mean of a delta is exactly zero in expectation.
    """
    seeds = seeds.reshape(-1)
    live = (seeds != 0).nonzero().reshape(-1)  # seed 0 is the leader: no numbers to draw
    out = torch.zeros(seeds.numel(), n, dtype=dtype, device=seeds.device)
    if live.numel():
        k = random_bits(seeds[live], offset, n) >> 9
        out[live] = ((2 * k + 1 - (1 << 23)).to(torch.float32) * (2.0**-23)).to(dtype)
    return out


def derive_seeds(seed: int, *words: int, count: int = 1) -> torch.Tensor:
    """`count` nonzero 64-bit seeds (int64, CPU) derived from a seed and up to 3 words.

    Used to turn (master seed, purpose, step, spec) into vendor seeds and
    sampling seeds without touching any global RNG. Seed i comes from the
    Philox block with counter (i, *words) keyed by `seed`.
    """
    if len(words) > 3:
        raise ValueError("derive_seeds takes at most 3 words besides the seed")
    words = tuple(int(w) & MASK32 for w in words) + (0,) * (3 - len(words))
    key = split_seed(torch.tensor(_to_int64(seed)))
    index = torch.arange(count, dtype=torch.int64)
    counter = (index, *(torch.full_like(index, w) for w in words))
    lo, hi, _, _ = philox4x32(counter, key)
    signed_hi = hi - ((hi >> 31) << 32)  # the high word as int32, so nothing overflows
    out = signed_hi * 2**32 + lo  # the 64-bit pattern hi:lo as an int64
    return torch.where(out == 0, torch.ones_like(out), out)


def _to_int64(value: int) -> int:
    """The int64 with the same low 64 bits as `value`."""
    value &= 2**64 - 1
    return value - 2**64 if value >= 2**63 else value
