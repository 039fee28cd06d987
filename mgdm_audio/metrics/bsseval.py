r"""BSSEval v4 (SDR, SIR, SAR, ISR) through ``museval``, the sigsep/SiSEC18 convention (``museval``
0.4.1 on PyPI).

For references ``s_j`` and an estimate ``\hat s_j``, BSSEval decomposes
:math:`\hat s_j = s_{\rm true} + e_{\rm spat} + e_{\rm interf} + e_{\rm artif}` with distortion filters of 512 taps;
v4 fits the filters **once on the whole signal** (time-invariant) and scores non-overlapping frames
(``window_s = 1.0`` s here, as ``museval.eval_mus_track``):

.. math:: \mathrm{SDR} = 10\log_{10}\frac{\|s_{\rm true}\|^2}{\|e_{\rm spat} + e_{\rm interf} + e_{\rm artif}\|^2},
   \quad \mathrm{ISR} = 10\log_{10}\frac{\|s_{\rm true}\|^2}{\|e_{\rm spat}\|^2},\quad
   \mathrm{SIR} = 10\log_{10}\frac{\|s_{\rm true} + e_{\rm spat}\|^2}{\|e_{\rm interf}\|^2},\quad
   \mathrm{SAR} = 10\log_{10}\frac{\|s_{\rm true} + e_{\rm spat} + e_{\rm interf}\|^2}{\|e_{\rm artif}\|^2}

Facts of museval 0.4.1 that this module keeps (and its tests check):

* a frame where **any** reference or any estimate is exactly all-zero is NaN for every stem and metric;
* museval refuses a reference stem that is all-zero over the whole signal (common for a Slakh chunk, where an
  instrument may not play). Here such stems are left out of the evaluation (their scores are NaN) and the others
  are scored against each other; with fewer than two non-silent reference stems everything is NaN;
* a zero error energy gives ``+inf`` dB, so a perfect estimate scores ``+inf`` or, after round-off in the
  least-squares projections, a very large value (above 100 dB); its SIR and SAR are ratios of round-off terms and
  mean nothing (with a few pure tones as references they can even be negative);
* per track the score of a stem is the **median over frames ignoring NaN** (``np.nanmedian``, ``TrackStore``'s
  ``frames_agg='median'``); over a test set it is the **median over tracks** of those (``EvalStore``'s
  ``tracks_agg='median'``): :func:`median_over_tracks`.

``museval`` (and ``ffmpeg``, which its dependency ``stempeg`` looks up at import) is imported lazily, only when a
BSSEval score is asked for: ``pip install museval`` and ``apt-get install -y ffmpeg``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from mgdm_audio.core.errors import UserInputError

METRICS = ("sdr", "sir", "sar", "isr")
INSTALL_HINT = "run `pip install museval` and install ffmpeg (e.g. `apt-get install -y ffmpeg`)"


def require_museval() -> ModuleType:
    """Import ``museval`` or raise one :class:`UserInputError` naming the install command."""
    try:
        import museval  # noqa: PLC0415 (optional dependency, imported only when asked for)
    except ImportError as err:
        raise UserInputError(f"BSSEval scores need the museval package: {INSTALL_HINT}.") from err
    except (RuntimeError, OSError) as err:  # stempeg raises RuntimeError at import when ffmpeg/ffprobe is missing
        raise UserInputError(f"museval could not be imported ({err}); {INSTALL_HINT}.") from err
    return museval


def museval_available() -> bool:
    """Whether :func:`require_museval` would succeed."""
    try:
        require_museval()
    except UserInputError:
        return False
    return True


@dataclass
class BSSEvalResult:
    """BSSEval v4 of one track (or chunk): per-stem medians over frames ``(S,)`` and the frames ``(S, F)``.

    ``sdr``, ``sir``, ``sar``, ``isr``: ``np.nanmedian`` over frames (NaN when every frame is NaN).
    ``frames``: metric name -> ``(S, F)`` per-frame values as museval returns them (NaN for silent frames).
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    isr: np.ndarray
    frames: dict[str, np.ndarray]

    def as_dict(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in getattr(self, name)] for name in METRICS}


def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (S, T) mono stems, got shape {arr.shape}.")
    return arr


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian`` over the last axis without the all-NaN RuntimeWarning (the result is NaN there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=-1)


def bss_eval(references: Any, estimates: Any, sample_rate: int, window_s: float = 1.0) -> BSSEvalResult:
    """BSSEval v4 of ``estimates (S, T)`` against ``references (S, T)`` (tensors or arrays, mono stems).

    Frames are non-overlapping, ``round(window_s * sample_rate)`` samples (museval ``win = hop``); the estimates are
    padded or truncated to the reference length as museval does. Needs at least two stems (BSSEval's
    interference term is defined against the other references); all-zero reference stems score NaN (module
    docstring).
    """
    museval = require_museval()
    ref, est = _as_array(references, "references"), _as_array(estimates, "estimates")
    if ref.shape[0] != est.shape[0]:
        raise ValueError(f"references and estimates need the same stem count, got {ref.shape[0]} and {est.shape[0]}.")
    if ref.shape[0] < 2:
        raise ValueError("BSSEval needs at least two stems.")
    window = int(round(window_s * sample_rate))
    if window < 1:
        raise ValueError(f"window_s * sample_rate must be at least one sample, got {window_s} * {sample_rate}.")
    n_stems = ref.shape[0]
    n_frames = ref.shape[1] // window if window < ref.shape[1] else 1  # museval's Framing
    frames = {name: np.full((n_stems, n_frames), np.nan) for name in METRICS}
    scored = np.flatnonzero(np.any(ref != 0, axis=1))
    if scored.size >= 2:
        est = est[:, : ref.shape[1]]
        est = np.pad(est, ((0, 0), (0, ref.shape[1] - est.shape[1])))
        sdr, isr, sir, sar = museval.evaluate(
            ref[scored, :, None], est[scored, :, None], win=window, hop=window, mode="v4"
        )
        for name, values in (("sdr", sdr), ("sir", sir), ("sar", sar), ("isr", isr)):
            frames[name][scored] = np.asarray(values, dtype=np.float64).reshape(scored.size, n_frames)
    medians = {name: _nanmedian(values) for name, values in frames.items()}
    return BSSEvalResult(frames=frames, **medians)


def median_over_tracks(results: Sequence[BSSEvalResult]) -> dict[str, np.ndarray]:
    """SiSEC18 aggregation: per metric and stem, the median over tracks of the per-track frame medians (NaN
    tracks ignored). Returns metric name -> ``(S,)``."""
    if not results:
        raise ValueError("median_over_tracks needs at least one track.")
    return {name: _nanmedian(np.stack([getattr(r, name) for r in results], axis=-1)) for name in METRICS}
