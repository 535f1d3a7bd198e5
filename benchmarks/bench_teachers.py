"""Teacher throughput: CLIP frames/s, CLAP audio segments/s, decode and end-to-end videos/s.

    python benchmarks/bench_teachers.py --device cuda --random-weights --out bench.json

Generates its own test videos (H.264 + AAC, --width x --height, 10 s), so it needs no data.
Each part that cannot run (package or checkpoint missing) is reported as skipped with the
reason, the rest still runs. Results (with batch sizes, dtype, device and which part limits
the end-to-end rate) are printed and written as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench_clip(args) -> dict:
    import torch

    from vaplan.teachers.clip_teacher import ClipTeacher

    teacher = ClipTeacher(args.clip_model, checkpoint=args.clip_ckpt,
                          pretrained=None if args.random_weights else "openai",
                          device=args.device, precision=args.precision,
                          allow_random=args.random_weights)
    teacher.model.to(args.device)
    pixels = torch.randn(args.clip_batch, 3, 224, 224)
    seconds = _timed(lambda: teacher.encode_images(pixels), args.device, args.repeats)
    frames = torch.randint(0, 255, (10, args.height, args.width, 3), dtype=torch.uint8).numpy()
    prep = _timed(lambda: teacher.preprocess(frames), "cpu", 2) / 10
    return {"frames_per_s": args.clip_batch / seconds, "batch": args.clip_batch,
            "precision": teacher.precision, "random_weights": teacher.random_weights,
            "preprocess_frames_per_s_one_thread": 1 / prep, "model": args.clip_model,
            "_teacher": teacher}


def bench_clap(args) -> dict:
    import numpy as np

    from vaplan.teachers.clap_teacher import ClapTeacher, TeacherUnavailable, check_roberta_cache

    note = ""
    if args.random_weights:
        try:
            check_roberta_cache()
        except TeacherUnavailable:  # the audio path does not depend on the text branch
            from vaplan.teachers.synthetic import use_tiny_roberta, write_tiny_roberta

            use_tiny_roberta(write_tiny_roberta(tempfile.mkdtemp()), _Setter())
            note = "roberta-base not cached: tiny RoBERTa stand-in (audio path unaffected)"
    teacher = ClapTeacher(args.clap_ckpt, device=args.device, precision=args.precision,
                          allow_random=args.random_weights)
    rng = np.random.default_rng(0)
    waves = teacher.preprocess(rng.uniform(-0.3, 0.3, (args.clap_batch, 48_000)).astype("float32"))
    seconds = _timed(lambda: teacher.encode_audio(waves), args.device, args.repeats)
    return {"segments_per_s": args.clap_batch / seconds, "batch": args.clap_batch,
            "precision": teacher.precision, "random_weights": teacher.random_weights,
            "note": note, "_teacher": teacher}


class _Setter:
    @staticmethod
    def setattr(target, name, value):
        setattr(target, name, value)


def make_videos(folder: Path, n: int, width: int, height: int, fps: int) -> Path:
    from vaplan.teachers.synthetic import write_test_video

    lines = ["filename\tevent_labels"]
    for i in range(n):
        vid = f"bench{i:06d}_0_10"
        write_test_video(folder / f"{vid}.mp4", fps=fps, size=(width, height),
                         tone_hz=200.0 + 10 * i)
        lines.append(f"{vid}\tSpeech")
    split = folder / "split.csv"
    split.write_text("\n".join(lines) + "\n")
    return split


def bench_decode(args, folder: Path, modalities: tuple[str, ...]) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from vaplan.teachers.decode import decode_video

    files = sorted(folder.glob("*.mp4"))
    frames, audio = "visual" in modalities, "audio" in modalities
    start = time.perf_counter()
    with ThreadPoolExecutor(args.num_workers) as pool:
        list(pool.map(lambda p: decode_video(p, frames=frames, audio=audio), files))
    seconds = time.perf_counter() - start
    return {"videos_per_s": len(files) / seconds, "workers": args.num_workers,
            "modalities": list(modalities), "videos": len(files)}


def bench_end_to_end(args, folder: Path, split: Path, teachers: dict) -> dict:
    from vaplan.teachers.run import TeachConfig, run_teach

    out = Path(tempfile.mkdtemp()) / "cache"
    cfg = TeachConfig(videos=str(folder), split_csv=str(split), out=str(out),
                      modalities=tuple(teachers), device=args.device, precision=args.precision,
                      allow_random_weights=args.random_weights, batch_videos=args.batch_videos,
                      num_workers=args.num_workers)
    report = run_teach(cfg, teachers=teachers, progress=False)
    return {"videos_per_s": report.videos_per_s, "videos": report.videos_processed,
            "failures": report.failures[:5], "batch_videos": args.batch_videos,
            "modalities": list(teachers)}


def limiting_part(results: dict) -> str:
    """Which stage caps videos/s (10 frames and 10 audio segments per video)."""
    rates = {}
    if "frames_per_s" in results.get("clip", {}):
        rates["clip (10 frames/video)"] = results["clip"]["frames_per_s"] / 10
    if "segments_per_s" in results.get("clap", {}):
        rates["clap (10 segments/video)"] = results["clap"]["segments_per_s"] / 10
    if "videos_per_s" in results.get("decode", {}):
        rates["decode"] = results["decode"]["videos_per_s"]
    if not rates:
        return "unknown"
    name = min(rates, key=rates.get)
    return f"{name}: {rates[name]:.1f} videos/s ({', '.join(f'{k} {v:.1f}' for k, v in rates.items())})"


def _run_part(results: dict, name: str, fn, *a):
    try:
        results[name] = fn(*a)
    except Exception as exc:  # degrade: report and continue
        results[name] = {"skipped": f"{type(exc).__name__}: {exc}",
                         "trace": traceback.format_exc(limit=3)}
        print(f"[bench] {name}: SKIPPED ({type(exc).__name__}: {exc})", flush=True)


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "device": device}
    for name in ("torch", "open_clip", "laion_clap", "av", "transformers", "numpy"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "?")
        except Exception as exc:
            env[name] = f"missing ({type(exc).__name__}: {exc})"
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32|fp16|bf16 (opt-in autocast)")
    p.add_argument("--random-weights", action="store_true", help="no checkpoints needed")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-ckpt", default=None)
    p.add_argument("--clap-ckpt", default=None)
    p.add_argument("--clip-batch", type=int, default=64)
    p.add_argument("--clap-batch", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--videos", type=int, default=8, help="generated videos for decode/e2e")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--batch-videos", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--skip", default="", help="comma list of parts to skip: clip,clap,decode,e2e")
    p.add_argument("--out", default="bench_teachers.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a benchmark never downloads
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results: dict = {"env": environment(args.device), "args": vars(args)}
    print(f"[bench] {json.dumps(results['env'])}", flush=True)
    for name, fn in (("clip", bench_clip), ("clap", bench_clap)):
        if name not in skip:
            _run_part(results, name, fn, args)
    teachers = {m: results[n].pop("_teacher") for m, n in (("visual", "clip"), ("audio", "clap"))
                if "_teacher" in results.get(n, {})}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not {"decode", "e2e"} <= skip:
            _run_part(results, "videos", lambda: {"split": str(make_videos(
                folder, args.videos, args.width, args.height, args.fps))})
        if "decode" not in skip and "split" in results.get("videos", {}):
            _run_part(results, "decode", bench_decode, args, folder,
                      tuple(teachers) or ("audio", "visual"))
        if "e2e" not in skip and teachers and "split" in results.get("videos", {}):
            _run_part(results, "end_to_end", bench_end_to_end, args, folder,
                      Path(results["videos"]["split"]), teachers)
    results["limiting_part"] = limiting_part(results)
    text = json.dumps(results, indent=2, default=str)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_suffix(".tmp")
    tmp_out.write_text(text)
    os.replace(tmp_out, args.out)
    print(text)
    return results


if __name__ == "__main__":
    main()
