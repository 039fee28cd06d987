r"""The ``separation.png`` of a track, built while the stems stream out (nothing is read back from disk).

:class:`SpectrogramSketch` keeps, for each signal row (the mixture, every stem, and with ``K > 1`` every stem's
spread), the power spectrogram :math:`|X(f, n)|^2` (Hann window ``N = 1024``, hop ``N / 4``) averaged over groups of
consecutive frames so that at most ``columns`` time columns remain: memory is ``rows x (N / 2 + 1) x columns``
whatever the track's length. :func:`plot_sketch` draws it in dB.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from mgdm_audio.core.atomic import save_figure_atomic


class SpectrogramSketch:
    """Pooled power spectrograms of ``len(titles)`` signals streamed as ``(rows, n)`` blocks."""

    def __init__(self, titles: list[str], sample_rate: int, frames: int, n_fft: int = 1024, columns: int = 800) -> None:
        self.titles, self.sample_rate, self.frames = titles, int(sample_rate), int(frames)
        self.n_fft, self.hop = n_fft, n_fft // 4
        n_frames = max(1, math.ceil(frames / self.hop))
        self.per_column = max(1, math.ceil(n_frames / columns))
        n_cols = math.ceil(n_frames / self.per_column)
        self.power = torch.zeros(len(titles), n_fft // 2 + 1, n_cols)
        self.count = torch.zeros(n_cols)
        self.window = torch.hann_window(n_fft)
        self.buffer = torch.zeros(len(titles), 0)
        self.next_frame = 0  # index of the next frame to compute (it starts at next_frame * hop - consumed)

    def push(self, block: Tensor) -> None:
        self.buffer = torch.cat([self.buffer, block.float()], -1)
        usable = (self.buffer.shape[-1] - self.n_fft) // self.hop + 1
        if usable > 0:
            self._add(self.buffer[:, : (usable - 1) * self.hop + self.n_fft])
            self.buffer = self.buffer[:, usable * self.hop :]

    def finish(self) -> None:
        """A signal shorter than one window gets one zero-padded frame; otherwise the frames that would cross the
        signal's end are left out (a cut to zero would show as a broadband line)."""
        if self.next_frame == 0 and self.buffer.shape[-1]:
            self._add(torch.nn.functional.pad(self.buffer, (0, self.n_fft - self.buffer.shape[-1])))
        self.buffer = self.buffer[:, :0]

    def _add(self, x: Tensor) -> None:
        frames = x.unfold(-1, self.n_fft, self.hop) * self.window  # (rows, n, N)
        power = torch.fft.rfft(frames, dim=-1).abs().pow(2).transpose(1, 2)  # (rows, F, n)
        index = (torch.arange(frames.shape[1]) + self.next_frame) // self.per_column
        keep = index < self.count.numel()
        self.power.index_add_(2, index[keep], power[..., keep])
        self.count.index_add_(0, index[keep], torch.ones(int(keep.sum())))
        self.next_frame += frames.shape[1]

    def db(self) -> Tensor:
        """``10 log10`` of the mean power per column, ``(rows, F, columns)``; columns without frames are dropped."""
        used = self.count > 0
        return 10 * torch.log10(self.power[..., used] / self.count[used] + 1e-12)


def plot_sketch(sketch: SpectrogramSketch, target: Path) -> Path:
    """Draw one panel per row (log magnitude in dB, time in seconds, frequency in kHz) into ``target``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    db = sketch.db()
    seconds, top = sketch.frames / sketch.sample_rate, sketch.sample_rate / 2000
    rows = len(sketch.titles)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.8 * rows), sharex=True, squeeze=False)
    for ax, title, image in zip(axes[:, 0], sketch.titles, db, strict=True):
        ax.imshow(image.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, top), vmin=-80, vmax=20)
        ax.set_ylabel("kHz")
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    save_figure_atomic(fig, target, dpi=80)
    return target
