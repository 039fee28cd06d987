r"""The user-facing separator: a mixture (tensor or file) in, stems out.

>>> sep = Separator(prior="slakh-style-small", sampler="mgdm", preset="fast")   # doctest: +SKIP
>>> result = sep.separate_file("song.wav")                                       # doctest: +SKIP
>>> result.stems.shape   # (S, C, T) at the input's channels C and rate           # doctest: +SKIP

What happens to a mixture (:class:`~mgdm_audio.audio.source.MixtureSource`, probed once and streamed once):

1. it is read in blocks; each block goes (a) to the channel mapper, unchanged, and (b) down-mixed to the mid
   ``(L + R) / 2`` and resampled to the prior's rate (python-soxr, streaming) to the prior;
2. the mid is scaled by ``g = r_train / rms(mid)`` so that its RMS matches the prior's training mixtures
   (``mix_rms`` in the prior's metadata; silence is left unscaled), and the stems are scaled back by ``1 / g``;
3. the streaming engine (:func:`~mgdm_audio.audio.streaming.separate_stream`) separates overlapping chunks with the
   chosen sampler, conditions each odd chunk on its neighbours' separated overlaps, cross-fades and projects the
   stems onto the mid (:math:`\sum_s \hat x_s = y` per sample);
4. with ``n_samples = K > 1`` each chunk runs ``K`` chains in one batch (``info["nfe"]`` counts every chain); the
   stems returned are the mean over the samples, and the spread is their standard deviation;
5. with ``output="input"`` (the default) the stems are resampled to the input's rate and mapped onto every input
   channel by ratio masks (:mod:`~mgdm_audio.audio.remix`), so that they sum to each input channel; a mono input
   at the prior's rate needs no mapping. ``output="prior"`` returns the prior's mono stems at its rate.

A discriminative separator (:mod:`~mgdm_audio.audio.discriminative`, an export named by ``init``) gives each chunk
an estimate :math:`\hat x = f(y)`: with ``sampler="demucs"`` that estimate is the output (0 NFE); with a diffusion
sampler and ``init_sigma = S`` the chains start from it noised to ``S`` and run only the part of their schedule below
``S`` (:class:`~mgdm_audio.samplers.base.WarmStart`; SDEdit, MSDM's "Demucs + Gibbs").

The separation problem per chunk is :math:`y = \sum_s x_s` (noiseless; the likelihood uses ``sigma_y = 1e-4`` as
the MGDM reference does). A chunk whose mixture is silent gives silent stems without running the sampler.
Quality and speed of the presets: ``evaluation/results/separation.md`` and ``separation_speed.md``.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.audio.io import resample_blocks
from mgdm_audio.audio.priors import AudioPrior, display_name, load_prior
from mgdm_audio.audio.remix import ChannelMapper, map_to_input
from mgdm_audio.audio.separation import MixtureWithKnownStems, SumOfStems
from mgdm_audio.audio.source import MixtureSource, probe_file, tensor_source
from mgdm_audio.audio.streaming import ChunkPlan, separate_stream
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.rng import make_generator
from mgdm_audio.core.runtime import resolve_device
from mgdm_audio.samplers.base import WarmStart
from mgdm_audio.samplers.run import RunSpec, resolve, run_posterior

SIGMA_Y = 1e-4
"""Likelihood std of the noiseless mixture (the MGDM reference's audio value)."""
DEFAULT_MIX_RMS = 0.08
"""Target mixture RMS when a prior's metadata does not give ``mix_rms``."""
SILENCE = 1e-6
"""A chunk whose mixture peak (after scaling) is below this is silent."""
DISCRIMINATIVE = "demucs"
"""The ``sampler`` name that runs the ``init`` separator alone (no diffusion prior)."""
DEFAULT_SEPARATOR = "slakh-diverse-htdemucs-small"
"""The shipped discriminative separator: what ``--sampler demucs`` runs when ``--init`` names none."""


@dataclass
class SeparationResult:
    """Stems ``(S, C, T)`` at ``sample_rate`` (the mean over samples when ``K > 1``), and with ``K > 1`` all samples
    ``(K, S, C, T)`` and the spread ``(S, C, T)`` (standard deviation across samples)."""

    stems: Tensor
    stem_names: tuple[str, ...]
    sample_rate: int
    samples: Tensor | None = None
    spread: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Tensor]:
        return {name: self.stems[i] for i, name in enumerate(self.stem_names)}


class Separator:
    """Separate mixtures into the prior's stems with a posterior sampler (see the module docstring).

    ``chunk_seconds`` defaults to the prior's training chunk; it is rounded up to the prior's length multiple.
    ``overlap`` is the fraction of a chunk shared with each neighbour (in (0, 0.5)). ``batch_chunks`` even chunks
    (and the odd chunks between them) run together. ``sampler_overrides`` change single sampler settings.
    ``callback(state)`` receives ``{"done_chunks", "total_chunks", "done_seconds", "total_seconds"}`` as the sampler
    steps through each batch of chunks. ``output`` is ``"input"`` (stems at the input's channels and rate, summing to
    it) or ``"prior"`` (the prior's mono stems at its rate); ``mask_exponent`` is the mapping's ``p``.
    ``init`` (a separator export's name or folder) with ``init_sigma`` warm-starts the sampler from its estimate;
    ``sampler="demucs"`` with ``init`` runs that separator alone (``prior`` unused).
    """

    def __init__(
        self,
        prior: str | Path | AudioPrior | Any = "slakh-style-small",
        sampler: str = "mgdm",
        preset: str = "default",
        device: str | torch.device = "auto",
        chunk_seconds: float | None = None,
        overlap: float = 0.25,
        batch_chunks: int = 4,
        n_samples: int = 1,
        seed: int = 0,
        callback: Callable[[dict[str, Any]], None] | None = None,
        sampler_overrides: dict[str, Any] | None = None,
        consistent: bool = True,
        output: str = "input",
        mask_exponent: float = 2.0,
        init: str | Path | Any = None,
        init_sigma: float | None = None,
        bf16: bool = False,
    ) -> None:
        if output not in ("input", "prior"):
            raise UserInputError(f"output must be 'input' or 'prior', got {output!r}.")
        self.output, self.mask_exponent = output, float(mask_exponent)
        if n_samples < 1:
            raise UserInputError(f"n_samples must be at least 1, got {n_samples}.")
        if batch_chunks < 1:
            raise UserInputError(f"batch_chunks must be at least 1, got {batch_chunks}.")
        self.device = resolve_device(device)
        self.estimator, self.init_sigma = _load_init(init, init_sigma, sampler, self.device), init_sigma
        self.run = None
        self.bf16 = bool(bf16)
        if sampler == DISCRIMINATIVE:
            self.prior, self.sampler_name, self.sampler_preset = self.estimator, DISCRIMINATIVE, None
        else:
            # a name or export folder is loaded; any object with AudioPrior's attributes (a test prior) is used as is
            if isinstance(prior, str | Path):  # bf16: the network under bf16 autocast, the sampler in float32
                self.prior = load_prior(prior, self.device, bf16=True) if bf16 else load_prior(prior, self.device)
            else:
                self.prior = prior.to(self.device)
            overrides = tuple(sorted((sampler_overrides or {}).items()))
            self.run = resolve(RunSpec(sampler, preset, overrides), "audio")  # audio: start at sqrt(1 - abar_T) n
            self.sampler_name, self.sampler_preset = self.run.sampler.name, self.run.sampler_preset
            _check_init(self.estimator, self.prior, self.run.sampler.warm_start, sampler)
        self.preset = preset
        multiple = self.prior.downsampling
        seconds = chunk_seconds if chunk_seconds is not None else self.prior.chunk_samples / self.prior.sample_rate
        if not (seconds > 0 and math.isfinite(seconds)):
            raise UserInputError(f"the segment length must be a positive number of seconds, got {seconds}.")
        chunk = max(multiple, multiple * math.ceil(seconds * self.prior.sample_rate / multiple))
        self.plan = ChunkPlan.from_fraction(chunk, overlap)
        self.batch_chunks, self.n_samples, self.seed = int(batch_chunks), int(n_samples), int(seed)
        self.callback, self.consistent = callback, consistent
        meta = self.prior.config.get("metadata", {})
        self.mix_rms = float(meta.get("mix_rms", DEFAULT_MIX_RMS))
        if self.run is not None:
            self.run.check(InverseProblem(SumOfStems(self.n_stems, chunk), torch.zeros(1, 1, chunk), SIGMA_Y))

    def run_key(self) -> dict[str, Any]:
        """Every value of the run that changes a number (JSON): the sampler's (:meth:`PosteriorRun.key`) and the
        initial estimate's weights and level."""
        key = self.run.key() if self.run is not None else {"sampler": DISCRIMINATIVE}
        if self.estimator is not None:
            key["init"] = {"weights_sha256": self.estimator.weights_sha256, "sigma": self.init_sigma}
        return key

    @property
    def n_stems(self) -> int:
        return len(self.prior.stems)

    @property
    def sample_rate(self) -> int:
        return self.prior.sample_rate

    @property
    def prior_name(self) -> str:
        return display_name(self.prior)

    def output_format(self, source: MixtureSource) -> tuple[int, int]:
        """``(sample_rate, channels)`` of the stems of ``source``."""
        if self.output == "prior":
            return self.sample_rate, 1
        return source.sample_rate, source.channels

    def output_frames(self, source: MixtureSource) -> int:
        """Samples per channel of the stems of ``source``."""
        rate, _ = self.output_format(source)
        return (
            source.frames if rate == source.sample_rate else math.floor(source.frames * rate / source.sample_rate + 0.5)
        )

    # ------------------------------------------------------------------------------------------------ public
    def separate_tensor(self, wav: Tensor, sample_rate: int) -> SeparationResult:
        """Separate a mixture ``(T,)`` or ``(C, T)`` (C = 1 or 2) given at ``sample_rate``."""
        return self._collect(tensor_source(wav, sample_rate))

    def separate_file(self, path: str | Path) -> SeparationResult:
        """Separate an audio file (anything libsndfile or FFmpeg reads), read in blocks."""
        return self._collect(probe_file(path))

    def _collect(self, source: MixtureSource) -> SeparationResult:
        parts: list[Tensor] = []
        info = self.separate(source, parts.append)
        rate, channels = self.output_format(source)
        k, s = self.n_samples, self.n_stems
        samples = torch.cat(parts, -1) if parts else torch.zeros(k, s, channels, 0)
        return SeparationResult(
            stems=samples.mean(0),
            stem_names=tuple(self.prior.stems),
            sample_rate=rate,
            samples=samples if k > 1 else None,
            spread=samples.std(0, unbiased=True) if k > 1 else None,
            info=info,
        )

    # ------------------------------------------------------------------------------------------------ engine
    def separate(self, source: MixtureSource, consume: Callable[[Tensor], None]) -> dict[str, Any]:
        """Stream the separation of ``source``: ``consume`` receives the stems as ``(K, S, C, n)`` blocks in order (at
        :meth:`output_format`; memory is bounded by the chunks in flight); returns the run's facts and cost."""
        sr_in, channels, sr = source.sample_rate, source.channels, self.sample_rate
        gain = self.mix_rms / source.rms if source.rms > 1e-9 else 1.0
        mapper = None
        if self.output == "input" and (channels > 1 or sr_in != sr):
            mapper = ChannelMapper(self.n_stems, channels, sr_in, sr, self.mask_exponent)
        generator = make_generator(self.seed, self.device)
        cost = {"nfe": 0, "vjp": 0, "chunks": 0, "batched_nfe": 0, "silent_chunks": 0, "sampler_seconds": 0.0}
        cost["init_seconds"] = 0.0  # the discriminative separator's share (with init)
        conditioning = {"used": None}
        total_chunks = self.plan.n_chunks(math.ceil(source.frames * sr / sr_in))
        start = time.perf_counter()

        def progress(done_chunks: float) -> None:
            if self.callback is not None:
                done = min(done_chunks, total_chunks)
                self.callback(
                    {
                        "done_chunks": done,
                        "total_chunks": total_chunks,
                        "done_seconds": source.seconds * done / total_chunks,
                        "total_seconds": source.seconds,
                    }
                )

        def chunk_fn(mix: Tensor, known: Tensor | None, mask: Tensor | None) -> Tensor:
            return self._separate_chunks(mix, known, mask, generator, cost, conditioning, progress)

        def mid_blocks() -> Iterator[Tensor]:
            for block in source.blocks():  # (C, n) at the input's rate: read once
                if mapper is not None:
                    mapper.push_mix(block)
                yield block.mean(0, keepdim=True) * gain

        stream = (b.reshape(-1) for b in resample_blocks(mid_blocks(), sr_in, sr))
        stems = separate_stream(
            stream, chunk_fn, self.plan, self.n_stems, batch_chunks=self.batch_chunks, consistent=self.consistent
        )
        map_seconds = 0.0
        if mapper is None:
            for out in stems:
                consume((out / gain)[:, :, None])
        else:
            for block, spent in map_to_input((out / gain for out in stems), mapper, sr, sr_in, source.frames):
                map_seconds += spent
                consume(block)
        seconds = time.perf_counter() - start
        rate, out_channels = self.output_format(source)
        total_seconds = source.seconds
        return {
            "prior": self.prior_name,
            "weights_sha256": self.prior.weights_sha256,
            **({"prior_source": src} if (src := self.prior.config.get("converted_from")) else {}),
            "sampler": self.sampler_name,
            "init": None if self.estimator is None else display_name(self.estimator),
            "init_sigma": self.init_sigma,
            "preset": self.preset,
            "sampler_preset": self.sampler_preset,
            "seed": self.seed,
            "n_samples": self.n_samples,
            "device": str(self.device),
            "bf16": self.bf16,
            "prior_sample_rate": sr,
            "input_sample_rate": sr_in,
            "input_channels": channels,
            "sample_rate": rate,
            "channels": out_channels,
            "downmix": "mid (L + R) / 2" if channels == 2 else "none (mono input)",
            "channel_mapping": None if mapper is None else f"ratio masks, exponent {self.mask_exponent:g}",
            "mapping_seconds": map_seconds,
            "input_gain": gain,
            "chunk_samples": self.plan.chunk,
            "overlap_samples": self.plan.overlap,
            "overlap_conditioning": conditioning["used"],
            "audio_seconds": total_seconds,
            "seconds": seconds,
            "real_time_factor": seconds / total_seconds if total_seconds > 0 else None,
            "nfe_per_audio_second": cost["nfe"] / total_seconds if total_seconds > 0 else None,
            "versions": versions(),
            **cost,
        }

    def _separate_chunks(
        self,
        mix: Tensor,
        known: Tensor | None,
        mask: Tensor | None,
        generator: torch.Generator,
        cost: dict[str, Any],
        conditioning: dict[str, Any],
        progress: Callable[[float], None],
    ) -> Tensor:
        """``mix (n, 1, T)``, ``known (n, K, S, T)`` -> stems ``(n, K, S, T)``; silent chunks skip the sampler.
        ``progress(chunks)`` follows the sampler's steps (a batch of ``m`` chunks advances by ``m i / steps``)."""
        n, k, s, t = mix.shape[0], self.n_samples, self.n_stems, mix.shape[-1]
        out = torch.zeros(n, k, s, t)
        active = [i for i in range(n) if float(mix[i].abs().max()) > SILENCE]
        done = cost["chunks"]
        cost["chunks"] += n
        cost["silent_chunks"] += n - len(active)
        progress(done + n - len(active))
        if not active:
            return out
        m = len(active)

        def step(state: dict[str, Any]) -> None:
            if "i" in state and state.get("total"):
                progress(done + n - m + m * int(state["i"]) / int(state["total"]))

        warm = None
        if self.estimator is not None:
            began = time.perf_counter()
            estimate = self.estimator.estimate(mix[active].to(self.device))  # (m, S, T)
            cost["init_seconds"] += time.perf_counter() - began
            if self.run is None:  # the separator alone: every sample is its estimate
                out[active] = estimate.float().cpu()[:, None].expand(m, k, s, t)
                progress(done + n)
                return out
            warm = WarmStart(estimate.repeat_interleave(k, 0), float(self.init_sigma))  # type: ignore[arg-type]
        assert self.run is not None
        y_mix = mix[active].to(self.device).repeat_interleave(k, 0)  # (m K, 1, T)
        problem = InverseProblem(SumOfStems(s, t), y_mix, SIGMA_Y)
        if known is not None and mask is not None:  # an odd chunk: its neighbours' overlaps, if the sampler takes them
            conditioning["used"] = self.run.extra_observations
            if self.run.extra_observations:
                op = MixtureWithKnownStems(s, mask).to(self.device)
                known_stems = known[active].to(self.device).reshape(m * k, s, t)
                problem = InverseProblem(op, op.observe(y_mix, known_stems), SIGMA_Y)
        result = run_posterior(
            self.prior, problem, self.run, m * k, generator, step, x_shape=(s, t), device=self.device, warm=warm
        )
        cost["nfe"] += result.nfe * m * k  # every chain of every chunk
        cost["vjp"] += result.vjp * m * k
        cost["batched_nfe"] += result.nfe
        cost["sampler_seconds"] += result.seconds
        out[active] = result.samples.float().cpu().reshape(m, k, s, t)
        progress(done + n)
        return out


def _load_init(init: str | Path | Any, init_sigma: float | None, sampler: str, device: torch.device) -> Any:
    """The ``init`` separator (loaded when named), after the checks of the init flags against each other."""
    from mgdm_audio.audio.discriminative import load_separator

    if sampler == DISCRIMINATIVE:
        if init is None:
            init = DEFAULT_SEPARATOR
        if init_sigma is not None:
            raise UserInputError(
                f"--init-sigma warm-starts a diffusion sampler; --sampler {DISCRIMINATIVE} takes none."
            )
    elif (init is None) != (init_sigma is None):
        raise UserInputError("--init and --init-sigma go together (the estimate and the noise level it starts at).")
    if init_sigma is not None and not (math.isfinite(init_sigma) and init_sigma > 0):
        raise UserInputError(f"--init-sigma must be a positive number, got {init_sigma}.")
    if init is None:
        return None
    return load_separator(init, device) if isinstance(init, str | Path) else init.to(device)


def _check_init(estimator: Any, prior: Any, warm_start: bool, sampler: str) -> None:
    """A warm start needs a sampler that has one and a separator with the prior's stems and rate."""
    if estimator is None:
        return
    if not warm_start:
        from mgdm_audio.samplers.run import warm_samplers

        raise UserInputError(f"sampler '{sampler}' has no warm start; use one of: {', '.join(warm_samplers())}.")
    check_same_stems(estimator, prior)


def check_same_stems(estimator: Any, prior: Any) -> None:
    """One clear error unless the separator gives the prior's stems, in its order, at its rate."""
    if tuple(estimator.stems) != tuple(prior.stems) or estimator.sample_rate != prior.sample_rate:
        raise UserInputError(
            f"--init separator '{display_name(estimator)}' gives {', '.join(estimator.stems)} at "
            f"{estimator.sample_rate} Hz but the prior separates {', '.join(prior.stems)} at {prior.sample_rate} Hz."
        )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("mgdm_audio", "numpy", "soundfile"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
