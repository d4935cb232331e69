"""Time whole-photo inference of the segmentation + dot network on CPU.

Builds each requested architecture (random weights: speed does not depend on
them), folds it for inference, and runs :func:`models.inference.predict_image`
on a synthetic 4000x3000 photo. Prints parameters, FLOPs per megapixel, the
median time per photo (and the CPU time it used: on a shared machine, wall
time with several threads suffers from other processes; there set
``OMP_WAIT_POLICY=PASSIVE``) and the process's peak resident memory.

    .venv/bin/python scripts/bench_model_speed.py --arch unet_mnv3 --threads 2
    .venv/bin/python scripts/bench_model_speed.py --arch lraspp --set width_mult=0.5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from data.config import parse_overrides, settings_from_mapping
from models.inference import predict_image
from models.network import ModelSettings, build_model, prepare_for_inference, receptive_field


def bench(settings: ModelSettings, image: np.ndarray, args: argparse.Namespace) -> dict[str, float | int | str]:
    """Parameters, FLOPs, receptive reach and predict_image timings of one architecture."""
    model = build_model(settings)
    fast = prepare_for_inference(model)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fast(torch.rand(1, 3, 512, 512))
    predict_image(fast, image[:1024, :1024])  # warm-up (oneDNN primitive creation)
    times, cpu = [], []
    n_dots = 0
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        pred = predict_image(fast, image, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        n_dots = len(pred.dots)
    return {
        "arch": settings.arch,
        "params": sum(p.numel() for p in model.parameters()),
        "gflop_per_mp": counter.get_total_flops() / 1e9 / (512 * 512 / 1e6),
        "receptive_reach_px": receptive_field(model),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_s": statistics.median(cpu),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "dots": n_dots,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=["unet_mnv3", "lraspp"], help="repeatable; default both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ModelSettings override")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    image = np.random.default_rng(0).integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
    overrides = parse_overrides(args.set)
    for arch in args.arch or ["unet_mnv3", "lraspp"]:
        settings = settings_from_mapping(ModelSettings, {**overrides, "arch": arch}, source="--set")
        r = bench(settings, image, args)
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        print(
            f"{arch}: params {r['params'] / 1e6:.3f} M, {r['gflop_per_mp']:.2f} GFLOP/MP, "
            f"receptive reach {r['receptive_reach_px']} px; {args.width}x{args.height}, "
            f"tile {args.tile}/{args.overlap}, "
            f"{args.threads} threads: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, CPU {r['cpu_s']:.2f} s), "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB (whole process so far)",
            flush=True,
        )


if __name__ == "__main__":
    main()
