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
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from data.config import parse_overrides, settings_from_mapping
from models.inference import predict_image
from models.network import ModelSettings, build_model, prepare_for_inference, receptive_field


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
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
    overrides = parse_overrides(args.set)
    for arch in args.arch or ["unet_mnv3", "lraspp"]:
        settings = settings_from_mapping(ModelSettings, {**overrides, "arch": arch}, source="--set")
        model = build_model(settings)
        params = sum(p.numel() for p in model.parameters())
        reach = receptive_field(model)
        fast = prepare_for_inference(model)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            fast(torch.rand(1, 3, 512, 512))
        gflop_per_mp = counter.get_total_flops() / 1e9 / (512 * 512 / 1e6)
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            pred = predict_image(fast, image, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(
            f"{arch}: params {params / 1e6:.3f} M, {gflop_per_mp:.2f} GFLOP/MP, receptive reach {reach} px, "
            f"{args.width}x{args.height} tile {args.tile}/{args.overlap}: median {statistics.median(times):.2f} s "
            f"(min {min(times):.2f}, {args.threads} threads, CPU time {statistics.median(cpu):.2f} s), peak RSS {peak_gib:.2f} GiB, {len(pred.dots)} dots",
            flush=True,
        )


if __name__ == "__main__":
    main()
