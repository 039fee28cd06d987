"""Training reader for a Slakh-layout split that may still be rendering: random crops, remixing, augmentation.

The split's complete tracks (folders with ``metadata.json``; :mod:`mgdm_audio.audio.data.render` writes it last)
are listed at construction and again at every :meth:`GrowingSplitDataset.set_epoch`, so a training run started
while the render goes on sees the tracks finished by the start of each epoch. An epoch has a fixed number of items
(``items_per_epoch``), so the trainer's batch arithmetic does not change as the split grows. Construction waits up
to ``wait_minutes`` for ``min_tracks`` complete tracks.

Item ``i`` of epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])`` alone: a track drawn with probability
proportional to its length, a crop start uniform in ``[0, L - T]`` (a track shorter than ``T`` is zero-padded);
with probability ``augment.remix`` each stem instead comes from its own independently drawn track and crop
(Demucs' remixing across tracks), then :func:`mgdm_audio.audio.data.augment.augment_stems`. For a fixed list of
complete tracks the items are therefore a deterministic function of ``(seed, epoch, i)``; while the render is
running the list, and so the items, depend on when each epoch started (recorded in ``tracks_seen``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mgdm_audio.audio.data.augment import AugmentConfig, augment_stems
from mgdm_audio.core.errors import UserInputError


class GrowingSplitDataset(Dataset):
    """Augmented random crops ``(S, chunk_samples)`` float32 from the complete tracks of ``root/split``."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        stems: Sequence[str] = ("bass", "drums", "guitar", "piano"),
        sample_rate: int = 22050,
        chunk_samples: int = 32768,
        items_per_epoch: int = 20000,
        seed: int = 0,
        min_tracks: int = 1,
        wait_minutes: float = 0.0,
        augment: dict | None = None,
    ) -> None:
        self.split_dir = Path(root) / split
        self.stems, self.sample_rate, self.chunk_samples = tuple(stems), int(sample_rate), int(chunk_samples)
        self.items_per_epoch, self.seed, self.epoch = int(items_per_epoch), int(seed), 0
        if self.items_per_epoch < 1 or self.chunk_samples < 1:
            raise UserInputError("items_per_epoch and chunk_samples must be at least 1.")
        try:
            self.augment = AugmentConfig(**{k: tuple(v) if k == "gain_db" else v for k, v in (augment or {}).items()})
        except TypeError as err:
            raise UserInputError(f"augment: {err}; known keys: {sorted(asdict(AugmentConfig()))}.") from err
        deadline = time.monotonic() + 60.0 * wait_minutes
        self.scan()
        while len(self.tracks) < min_tracks and time.monotonic() < deadline:
            time.sleep(30.0)
            self.scan()
        if len(self.tracks) < min_tracks:
            raise UserInputError(
                f"{self.split_dir} has {len(self.tracks)} complete tracks (with metadata.json), fewer than "
                f"min_tracks={min_tracks}; render more (`python -m mgdm_audio make-dataset ...`) or wait."
            )
        self.tracks_seen: dict[int, int] = {0: len(self.tracks)}

    def scan(self) -> None:
        """List the complete tracks and their lengths (from ``metadata.json``)."""
        tracks, lengths = [], []
        if self.split_dir.is_dir():
            for meta in sorted(self.split_dir.glob("Track*/metadata.json")):
                info = json.loads(meta.read_text())
                if int(info["sample_rate"]) != self.sample_rate:
                    raise UserInputError(
                        f"{meta} is at {info['sample_rate']} Hz, not the reader's sample_rate={self.sample_rate}."
                    )
                tracks.append(meta.parent)
                lengths.append(int(info["samples"]))
        self.tracks = tracks
        self.lengths = np.asarray(lengths, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Rescan the split (tracks finished since) and select the crops of ``epoch``."""
        self.epoch = int(epoch)
        self.scan()
        self.tracks_seen[self.epoch] = len(self.tracks)

    def __len__(self) -> int:
        return self.items_per_epoch

    def _crop(self, rng: np.random.Generator) -> tuple[int, int]:
        track = int(rng.choice(len(self.tracks), p=self.lengths / self.lengths.sum()))
        start = int(rng.integers(0, max(1, int(self.lengths[track]) - self.chunk_samples + 1)))
        return track, start

    def _read(self, track: int, stem: str, start: int) -> np.ndarray:
        import soundfile

        path = self.tracks[track] / f"{stem}.flac"
        out = np.zeros(self.chunk_samples, dtype=np.float32)
        if path.is_file():
            audio, _ = soundfile.read(path, start=start, stop=start + self.chunk_samples, dtype="float32")
            out[: audio.shape[0]] = audio if audio.ndim == 1 else audio.mean(axis=1)
        return out

    def crops(self, index: int) -> list[tuple[int, int]]:
        """``(track, start)`` of each stem of item ``index`` (remixed stems have their own)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shared = self._crop(rng)
        return [self._crop(rng) if rng.random() < self.augment.remix else shared for _ in self.stems]

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        crops = self.crops(index)
        stems = np.stack([self._read(t, stem, s) for (t, s), stem in zip(crops, self.stems, strict=True)])
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        return torch.from_numpy(augment_stems(stems, self.sample_rate, rng, self.augment))
