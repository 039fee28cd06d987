"""GPU check (issue 21): host synchronisations per sampler step, and the full-size MSDM network on the example.

Run on a CUDA machine through ``evaluation/gpu_check.sh`` (it also runs the test suite's device-relevant files).
It prints, and writes as JSON and markdown with ``--out``:

1. the device, torch and CUDA versions;
2. per registry sampler at its ``fast`` preset, on a tiny random MSDM network (2 chains x 4 stems x 8192 samples):
   the host synchronisations that ``torch.cuda.set_sync_debug_mode("warn")`` reports per sampler step (0 is the
   target; what remains is listed with the line that caused it);
3. the bundled 20 s example separated (``Separator``, preset ``fast``) with the full-size random-weight MSDM network
   (405,497,700 parameters), in float32 and under bf16 autocast: NFE, NFE per second, wall seconds, real-time
   factor and peak GPU memory.

``--device cpu --small`` runs the same code on the CPU with the tiny network on the example's first 3 s (a smoke test
of this script; no sync counts there): nothing on the CPU path depends on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from mgdm_audio.audio.msdm_net import MGDM_AUDIO_LEVELS, build_msdm_prior
from mgdm_audio.audio.priors import AudioPrior
from mgdm_audio.audio.separator import Separator
from mgdm_audio.benchmarks.harness import provenance_markdown, script_provenance, with_provenance
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.registry import get_sampler, sampler_names

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/bach_bwv269/mix.flac"
STEMS = ("bass", "drums", "guitar", "piano")


def in_memory_prior(config: str, device: torch.device, bf16: bool = False, chunk: int = 262144) -> AudioPrior:
    torch.manual_seed(0)
    module = build_msdm_prior(config, edm={"sigma_data": 0.2, **MGDM_AUDIO_LEVELS}).eval().requires_grad_(False)
    module.autocast_bf16 = bf16
    prior = AudioPrior(module, STEMS, 22050, chunk, {"name": f"random-msdm-{config}"}, "random", Path("random"))
    return prior.to(device)


def sync_audit(device: torch.device) -> list[dict[str, Any]]:
    from mgdm_audio.audio.separation import SumOfStems

    prior = in_memory_prior("tiny", device)
    rows = []
    for name in sampler_names():
        spec = get_sampler(name)
        preset = "fast" if "fast" in spec.presets else "default"
        config = spec.config(preset)
        if hasattr(config, "start_scale"):
            config.start_scale = "vp"
        t = 8192
        y = 0.1 * torch.randn(2, 1, t, device=device)
        problem = InverseProblem(SumOfStems(4, t), y, 1e-4)
        x_init = torch.randn(2, 4, t, device=device)
        steps = int(getattr(config, "n_steps", 0) or getattr(config, "annealing_steps", 0) or 1)
        row: dict[str, Any] = {"sampler": name, "preset": preset, "steps": steps}
        try:
            spec.check(problem, config)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    result = spec.run(prior, problem, x_init, generator=make_generator(0, device), config=config)
                finally:
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
            syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
            places = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
            row.update(
                finite=bool(torch.isfinite(result.samples).all()),
                nfe=result.nfe,
                syncs=len(syncs) if device.type == "cuda" else None,
                syncs_per_step=len(syncs) / steps if device.type == "cuda" else None,
                where=places[:8],
            )
        except Exception as err:  # a sampler that does not apply to this problem (e.g. needs an SVD) is listed
            row.update(error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=2)[-300:])
        rows.append(row)
    return rows


def full_size_run(
    device: torch.device, config: str, bf16: bool, preset: str = "fast", crop_seconds: float | None = None
) -> dict[str, Any]:
    """The example through ``Separator`` (the first ``crop_seconds`` only, for the CPU smoke test)."""
    import soundfile as sf

    chunk = 262144 if crop_seconds is None else 32768
    prior = in_memory_prior(config, device, bf16, chunk)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    separator = Separator(prior, preset=preset, device=device, batch_chunks=4, seed=0)
    audio, sr = sf.read(EXAMPLE, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio.T)
    if crop_seconds is not None:
        wav = wav[:, : int(crop_seconds * sr)]
    start = time.perf_counter()
    result = separator.separate_tensor(wav, sr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    info = result.info
    nfe, calls = float(info["nfe"]), float(info["batched_nfe"])  # per chunk chain / batched network calls
    return {
        "network": config,
        "bf16": bf16,
        "preset": preset,
        "parameters": sum(p.numel() for p in prior.module.parameters()),
        "audio_seconds": info["audio_seconds"],
        "seconds": seconds,
        "real_time_factor": seconds / info["audio_seconds"],
        "nfe": nfe,
        "nfe_per_second": nfe / seconds,
        "network_calls": calls,
        "finite": bool(torch.isfinite(result.stems).all()),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# GPU check (evaluation/gpu_check.sh)",
        "",
        f"Device {env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}, {env['date']}.",
        "",
        "## Host synchronisations per sampler step (tiny random MSDM network, 2 x 4 x 8192)",
        "",
        "| sampler | preset | steps | NFE | syncs | syncs / step | where |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["sync_audit"]:
        if "error" in r:
            lines.append(f"| {r['sampler']} | {r['preset']} | {r['steps']} | - | - | - | {r['error'][:80]} |")
        else:
            lines.append(
                f"| {r['sampler']} | {r['preset']} | {r['steps']} | {r['nfe']} | "
                f"{'n/a (CPU)' if r['syncs'] is None else r['syncs']} | "
                f"{'n/a' if r['syncs_per_step'] is None else round(r['syncs_per_step'], 2)} | "
                f"{', '.join(r['where'])} |"
            )
    lines += [
        "",
        "## The bundled example, random-weight MSDM network, Separator preset fast",
        "",
        "| network | bf16 | parameters | NFE (chunk chains) | batched calls | NFE/s | wall s | real-time factor "
        "| peak GPU memory (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["separation"]:
        mem = "n/a" if r["peak_gpu_memory_gb"] is None else f"{r['peak_gpu_memory_gb']:.2f}"
        lines.append(
            f"| {r['network']} | {r['bf16']} | {r['parameters']:,} | {r['nfe']:.0f} | {r['network_calls']:.0f} | "
            f"{r['nfe_per_second']:.2f} | "
            f"{r['seconds']:.1f} | {r['real_time_factor']:.3f} | {mem} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny network for the example run (smoke test)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; nothing to check (--device cpu --small: a smoke test).")
    prov = script_provenance(None, str(device))  # random-weight networks: no learnt prior
    env = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(env), flush=True)
    audit = sync_audit(device)
    for row in audit:
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    network = "tiny" if args.small else "published"
    runs = []
    for bf16 in (False, True):
        runs.append(full_size_run(device, network, bf16, crop_seconds=3.0 if args.small else None))
        print(json.dumps(runs[-1]), flush=True)
    report = {"environment": env, "sync_audit": audit, "separation": runs}
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(with_provenance(report, prov), indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text + provenance_markdown(prov))


if __name__ == "__main__":
    main()
