r"""The streaming separation engine: overlapping chunks, neighbour conditioning, cross-fades, bounded memory.

Chunk ``k`` covers samples ``[k h, k h + T)`` with hop ``h = T - v`` (``v`` = overlap, ``0 < v < T / 2``).
Chunks are separated in two interleaved passes so that a batch of chunks runs together:

1. **even** chunks ``0, 2, 4, ...`` do not overlap each other; each is separated from its mixture alone
   (``y = sum of the stems``);
2. each **odd** chunk ``2j + 1`` overlaps the tail of chunk ``2j`` and the head of chunk ``2j + 2`` by ``v``
   samples. It is separated *conditioned on* those already-separated overlaps: the sampler sees the stems on its
   first and last ``v`` samples and the mixture in between (:class:`~mgdm_audio.audio.separation.MixtureWithKnownStems`,
   one more linear observation for the core). Its new content is the ``T - 2v`` samples between the evens.

The output is stitched with raised-cosine cross-fades from the even to the odd estimate across each overlap (the two
agree there up to the sampler's fit of the conditioning, so the fade removes any residual step), then made
mixture-consistent, :math:`\hat x_s \leftarrow \hat x_s + (y - \sum_r \hat x_r) / S` per sample. A sampler that
cannot take the conditioning operator (MSDM's sampler knows only the plain sum) separates odd chunks from the
mixture alone; the cross-fade then does the joining.

Memory: the engine holds the mixture from the first sample not yet written to the end of the chunks in flight
(one round = ``batch_chunks`` even chunks and the odd chunks between them), never the whole track.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from mgdm_audio.core.errors import InternalError, UserInputError

ChunkFn = Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
"""``fn(mixture (n, 1, T), known_stems (n, K, S, T) or None, known_mask (T,) or None) -> stems (n, K, S, T)``."""


@dataclass(frozen=True)
class ChunkPlan:
    """Chunk length ``T`` and overlap ``v`` (samples); ``hop = T - v``."""

    chunk: int
    overlap: int

    def __post_init__(self) -> None:
        if self.chunk < 4:
            raise UserInputError(f"a chunk must have at least 4 samples, got {self.chunk}.")
        if not 0 < self.overlap < self.chunk / 2:
            raise UserInputError(
                f"the overlap must be between 0 and half a chunk (exclusive); got {self.overlap} of {self.chunk} "
                "samples. Use an --overlap fraction in (0, 0.5)."
            )

    @classmethod
    def from_fraction(cls, chunk: int, fraction: float) -> ChunkPlan:
        if not 0 < fraction < 0.5:
            raise UserInputError(f"the overlap fraction must be in (0, 0.5), got {fraction}.")
        return cls(chunk, max(1, int(round(chunk * fraction))))

    @property
    def hop(self) -> int:
        return self.chunk - self.overlap

    def start(self, k: int) -> int:
        return k * self.hop

    def n_chunks(self, length: int) -> int:
        """Chunks covering ``length`` samples; always odd (the sequence ends with an even chunk)."""
        n = 1 if length <= self.chunk else 1 + math.ceil((length - self.chunk) / self.hop)
        return n if n % 2 == 1 else n + 1

    def odd_known_mask(self) -> Tensor:
        """An odd chunk knows its first and last ``overlap`` samples (from its even neighbours)."""
        mask = torch.zeros(self.chunk, dtype=torch.bool)
        mask[: self.overlap] = True
        mask[-self.overlap :] = True
        return mask

    def odd_weight(self) -> Tensor:
        """Cross-fade weight of an odd chunk over its span: raised cosine 0 -> 1 over the head overlap, 1 in the
        middle, 1 -> 0 over the tail (the even chunks get ``1 -`` this where they overlap)."""
        v = self.overlap
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(v, dtype=torch.float64) + 0.5) / v)
        w = torch.ones(self.chunk, dtype=torch.float64)
        w[:v] = ramp
        w[-v:] = ramp.flip(0)
        return w


class _MixtureBuffer:
    """The mixture from sample ``offset`` on, filled from an iterator of 1-D blocks (zeros past the end)."""

    def __init__(self, blocks: Iterable[Tensor]) -> None:
        self._blocks: Iterator[Tensor] = iter(blocks)
        self.data = torch.zeros(0)
        self.offset = 0
        self.length_seen = 0
        self.exhausted = False

    def fill_to(self, end: int) -> None:
        while not self.exhausted and self.offset + self.data.numel() < end:
            try:
                block = next(self._blocks)
            except StopIteration:
                self.exhausted = True
                break
            block = block.reshape(-1).float()
            self.length_seen += block.numel()
            self.data = torch.cat([self.data, block])

    def get(self, start: int, stop: int) -> Tensor:
        self.fill_to(stop)
        a, b = start - self.offset, stop - self.offset
        if a < 0:
            raise InternalError("the engine asked for mixture samples it has already released")
        out = self.data[a : min(b, self.data.numel())]
        return torch.cat([out, out.new_zeros(stop - start - out.numel())]) if out.numel() < stop - start else out

    def release_before(self, position: int) -> None:
        drop = position - self.offset
        if drop > 0:
            self.data = self.data[drop:].clone()
            self.offset = position

    def done_before(self, position: int) -> bool:
        """True when the input has ended before ``position``."""
        self.fill_to(position + 1)
        return self.exhausted and self.length_seen <= position


def separate_stream(
    blocks: Iterable[Tensor],
    chunk_fn: ChunkFn,
    plan: ChunkPlan,
    n_stems: int,
    *,
    batch_chunks: int = 2,
    consistent: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Tensor]:
    """Separate a mixture given as 1-D blocks; yields finished output blocks ``(K, S, n)`` in order.

    ``chunk_fn`` separates a batch of chunks (see :data:`ChunkFn`); ``K`` is its number of posterior samples.
    ``progress(n)`` is called with the number of samples finished so far. The concatenated output has exactly the
    input's length.
    """
    if batch_chunks < 1:
        raise UserInputError(f"batch_chunks must be at least 1, got {batch_chunks}.")
    mix = _MixtureBuffer(blocks)
    T = plan.chunk
    w_odd = plan.odd_weight()
    known_mask = plan.odd_known_mask()
    emitted = 0
    prev_even: tuple[int, Tensor] | None = None  # (chunk index, stems (K, S, T)) of the last even chunk
    k_even = 0
    while True:
        # the evens of this round: chunk indices k_even, k_even + 2, ...; stop when the input has ended
        evens = []
        for j in range(batch_chunks):
            k = k_even + 2 * j
            if k > 0 and mix.done_before(plan.start(k - 2) + T):
                break  # the input ends inside the previous even chunk: no more chunks needed
            evens.append(k)
        if not evens:
            break
        mix_even = torch.stack([mix.get(plan.start(k), plan.start(k) + T) for k in evens])[:, None]
        est_even = chunk_fn(mix_even, None, None)
        chain = ([prev_even] if prev_even is not None else []) + list(zip(evens, est_even, strict=True))
        odds = [(chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
        est_odd: Tensor | None = None
        if odds:
            mix_odd = torch.stack([mix.get(plan.start(a[0] + 1), plan.start(a[0] + 1) + T) for a, _ in odds])[:, None]
            known = torch.stack([_known_stems(a[1], b[1], plan) for a, b in odds])
            est_odd = chunk_fn(mix_odd, known, known_mask)
        last_k, last_est = chain[-1]
        finished = mix.done_before(plan.start(last_k) + T)
        # everything from `emitted` up to the start of the odd chunk after the last even (or the end of the input)
        stop = mix.length_seen if finished else plan.start(last_k + 1)
        seg = last_est.new_zeros(last_est.shape[0], n_stems, stop - emitted, dtype=torch.float64)
        for k, est in chain:
            _add(seg, est.double(), plan.start(k) - emitted, _even_weight(k, last_k, plan, w_odd))
        if est_odd is not None:
            for (a, _), est in zip(odds, est_odd, strict=True):
                _add(seg, est.double(), plan.start(a[0] + 1) - emitted, w_odd)
        if consistent:
            seg += (mix.get(emitted, stop).double() - seg.sum(1, keepdim=True)) / n_stems
        if seg.shape[-1]:
            yield seg.float()
        emitted = stop
        if progress is not None:
            progress(emitted)
        if finished:
            return
        mix.release_before(emitted)
        prev_even = (last_k, last_est)
        k_even = last_k + 2


def _known_stems(left: Tensor, right: Tensor, plan: ChunkPlan) -> Tensor:
    """Stems ``(K, S, T)`` for the odd chunk between two evens: the left's tail and the right's head."""
    v = plan.overlap
    known = left.new_zeros(left.shape)
    known[..., :v] = left[..., -v:]
    known[..., -v:] = right[..., :v]
    return known


def _even_weight(k: int, last_k: int, plan: ChunkPlan, w_odd: Tensor) -> Tensor:
    """An even chunk's weight: 1 minus the fades of the odd chunks that overlap it (the one before it, for
    ``k > 0``; the one after it, unless it is the round's last even, whose tail lies past the emitted range)."""
    v = plan.overlap
    w = torch.ones(plan.chunk, dtype=torch.float64)
    if k > 0:
        w[:v] -= w_odd[-v:]
    if k != last_k:
        w[-v:] -= w_odd[:v]
    return w


def _add(seg: Tensor, est: Tensor, offset: int, weight: Tensor) -> None:
    """``seg[..., offset + t] += weight[t] * est[..., t]`` for the part of the chunk inside the segment."""
    n = est.shape[-1]
    a, b = max(0, -offset), min(n, seg.shape[-1] - offset)
    if b > a:
        seg[..., offset + a : offset + b] += weight[a:b].to(est) * est[..., a:b]
