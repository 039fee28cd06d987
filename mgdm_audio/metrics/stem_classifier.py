r"""Which instrument is this stem? A gain-invariant log-mel stem classifier, to check what a prior generates.

Features of a stem ``x`` (``T`` samples at rate ``sr``): ``x`` scaled to unit RMS, its mel power spectrogram
(librosa: periodic Hann window of 1024, hop 256, centred with reflect padding; 64 unnormalised triangular bands
equally spaced on the HTK mel scale ``m(f) = 2595 log10(1 + f / 700)`` from 0 Hz to Nyquist), ``M = log10(mel +
1e-10)``; the feature vector is the mean and the standard deviation of ``M`` over frames (``2 x 64`` values).

Classifier: multinomial logistic regression :math:`p(k \mid f) = \mathrm{softmax}(W (f - \mu) / s + b)_k` on
standardised features, fitted by full-batch Adam from zero weights to the mean cross-entropy plus
``l2 ||W||^2`` (deterministic). A stem is *silent* when its RMS is below a threshold in dBFS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.core.errors import UserInputError

SILENCE_DB = -60.0
N_FFT, HOP, N_MELS = 1024, 256, 64
INSTALL_HINT = "pip install -c constraints.txt librosa (or the package's 'eval' extra)"


def log_mel(x: Tensor, sample_rate: int, n_mels: int = N_MELS) -> Tensor:
    """``log10`` mel power spectrogram ``(N, n_mels, frames)`` of ``x`` ``(N, T)`` (see the module docstring)."""
    try:
        import librosa  # noqa: PLC0415 (optional dependency, imported only when asked for)
    except ImportError as err:
        raise UserInputError(f"mel spectrograms need the librosa package: {INSTALL_HINT}.") from err
    mel = librosa.feature.melspectrogram(
        y=x.detach().float().cpu().numpy(),
        sr=sample_rate,
        n_fft=N_FFT,
        hop_length=HOP,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=n_mels,
        fmin=0.0,
        fmax=sample_rate / 2,
        htk=True,
        norm=None,
    )
    return torch.log10(torch.from_numpy(mel) + 1e-10)


def rms_db(x: Tensor) -> Tensor:
    """``20 log10(RMS)`` over the last axis (dBFS; -inf-safe at -200)."""
    return 20 * torch.log10(x.float().pow(2).mean(dim=-1).sqrt().clamp(min=1e-10))


def stem_features(x: Tensor, sample_rate: int) -> Tensor:
    """Gain-invariant features ``(N, 2 n_mels)`` of stems ``(N, T)``: log-mel mean and std over frames."""
    x = x.float()
    x = x / x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp(min=1e-8)
    mel = log_mel(x, sample_rate)
    return torch.cat([mel.mean(dim=-1), mel.std(dim=-1)], dim=-1)


@dataclass
class StemClassifier:
    """Multinomial logistic regression ``p(k | f) = softmax(W (f - mu) / s + b)_k`` on standardised features."""

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, features: Tensor) -> Tensor:
        return ((features - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict(self, features: Tensor) -> Tensor:
        return self.logits(features).argmax(dim=-1)


def fit_logistic_regression(
    features: Tensor, labels: Tensor, n_classes: int, steps: int = 400, l2: float = 1e-3, lr: float = 0.05
) -> StemClassifier:
    """Minimise ``mean cross-entropy + l2 ||W||^2`` with full-batch Adam from zero weights (deterministic)."""
    features = features.double()
    mean, scale = features.mean(dim=0), features.std(dim=0).clamp(min=1e-6)
    z = (features - mean) / scale
    weight = torch.zeros(n_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        optimiser.step()
    return StemClassifier(mean.float(), scale.float(), weight.detach().float(), bias.detach().float())


def labelled_stems(chunks: Tensor, silence_db: float) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten ``(N, S, T)`` to stems ``(N S, T)``, their labels (the channel) and an ``active`` mask."""
    n, s, t = chunks.shape
    stems = chunks.reshape(n * s, t)
    labels = torch.arange(s).repeat(n)
    return stems, labels, rms_db(stems) > silence_db


def fit_stem_classifier(train_chunks: Tensor, sample_rate: int, silence_db: float) -> tuple[StemClassifier, int]:
    """The stem classifier fitted to the active stems of ``train_chunks`` ``(N, S, T)`` (label = channel), and how
    many stems it was fitted to."""
    stems, labels, active = labelled_stems(train_chunks, silence_db)
    classifier = fit_logistic_regression(
        stem_features(stems[active], sample_rate), labels[active], train_chunks.shape[1]
    )
    return classifier, int(active.sum())


def stem_accuracy(
    classifier: StemClassifier,
    chunks: Tensor,
    stem_names: list[str],
    sample_rate: int,
    silence_db: float,
    count_silent_as_errors: bool,
) -> dict[str, Any]:
    """Per-stem and overall accuracy of ``classifier`` on ``chunks`` ``(N, S, T)``, labels = channel index.

    With ``count_silent_as_errors`` every stem is scored and a silent one is wrong; otherwise silent stems are
    left out (the check on real data, where a stem is often silent in a chunk).
    """
    stems, labels, active = labelled_stems(chunks, silence_db)
    predicted = classifier.predict(stem_features(stems, sample_rate))
    correct = (predicted == labels) & active
    scored = torch.ones_like(active) if count_silent_as_errors else active
    per_stem = {}
    for k, name in enumerate(stem_names):
        mine = labels == k
        total = int((scored & mine).sum())
        per_stem[name] = {
            "correct": int((correct & mine).sum()),
            "scored": total,
            "silent": int((~active & mine).sum()),
            "median_rms_db": float(rms_db(stems[mine]).median()),
            "accuracy": float((correct & mine).sum()) / total if total else float("nan"),
        }
    total = int(scored.sum())
    confusion = torch.zeros(len(stem_names), len(stem_names), dtype=torch.long)
    for true, guess in zip(labels[active].tolist(), predicted[active].tolist(), strict=True):
        confusion[true, guess] += 1
    return {
        "accuracy": float(correct.sum()) / total if total else float("nan"),
        "correct": int(correct.sum()),
        "scored": total,
        "silent_fraction": float((~active).float().mean()),
        "per_stem": per_stem,
        "confusion_active": confusion.tolist(),
    }
