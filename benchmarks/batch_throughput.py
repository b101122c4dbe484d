"""Batch throughput: items per minute in process vs on a local Ray cluster, side by side in one run.

The same manifest (distinct pictures, the InstructPix2Pix example on the self-check's tiny weights)
runs through ``python -m lmm_edit batch``'s runner twice: in this process (one ComfyUI session), then
on a throwaway local Ray cluster with ``--workers`` CPU actors (each its own ComfyUI session). Boot
time (ComfyUI start, writing the tiny weights) is reported apart; the rate counts items only.
With CUDA it also runs one Ray worker per GPU and reports items per minute per GPU.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/batch_throughput.py [--items 8] [--workers 2] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

from pack_import import import_pack

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _manifest(folder: pathlib.Path, items: int, size: int) -> pathlib.Path:
    import numpy as np
    from PIL import Image

    rows = []
    for index in range(items):
        pixels = np.random.default_rng(index).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{index}.png")
        rows.append(dict(id=f"item{index}", image=f"p{index}.png", instruction=f"edit number {index}", seed=index))
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _measure(label: str, make_runner, manifest: pathlib.Path, out: pathlib.Path, options) -> dict:
    from lmm_edit.cli.batch.command import run_batch
    from lmm_edit.cli.batch.manifest import read_manifest
    from lmm_edit.cli.batch.workflow import load_workflow

    items = read_manifest(manifest)
    times = {}

    def timed_runner():
        runner = make_runner()
        times["ready"] = time.perf_counter()
        return runner

    start = time.perf_counter()
    counts = run_batch(items, load_workflow("instructpix2pix"), options, out, timed_runner, progress=False)
    end = time.perf_counter()
    if counts["done"] != len(items):
        raise SystemExit(f"{label}: only {counts['done']} of {len(items)} items were done")
    run = end - times["ready"]
    return dict(label=label, boot=times["ready"] - start, run=run, per_minute=60 * len(items) / run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="square picture side")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH)")
    args = parser.parse_args()
    import_pack()
    import torch

    from lmm_edit.cli.batch.local_runner import LocalRunner
    from lmm_edit.cli.batch.ray_runner import RayRunner
    from lmm_edit.cli.batch.worker import EditWorker, WorkerOptions
    from lmm_edit.cli.batch.workflow import load_workflow
    from lmm_edit.cli.comfy_session import find_comfyui

    comfyui = str(find_comfyui(args.comfyui))
    workflow = load_workflow("instructpix2pix")
    cpu = WorkerOptions(comfyui=comfyui, steps=args.steps, self_check=True, cpu=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        manifest = _manifest(work, args.items, args.size)
        rows.append(_measure("in process (CPU)", lambda: LocalRunner(EditWorker(cpu, workflow)), manifest,
                             work / "local", cpu))
        rows.append(_measure(f"Ray, {args.workers} CPU workers", lambda: RayRunner(
            "local", cpu, workflow, workers=args.workers, gpus_per_worker=0), manifest, work / "ray", cpu))
        gpus = torch.cuda.device_count()
        if gpus:
            gpu = WorkerOptions(comfyui=comfyui, steps=args.steps, self_check=True, cpu=False)
            row = _measure(f"Ray, {gpus} GPU workers", lambda: RayRunner(
                "local", gpu, workflow, workers=gpus, gpus_per_worker=1), manifest, work / "ray_gpu", gpu)
            row["per_gpu"] = row["per_minute"] / gpus
            rows.append(row)
    print(f"\n{args.items} items, {args.size}x{args.size}, {args.steps} steps, InstructPix2Pix on tiny weights, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads in process")
    print(f"{'runner':<24} {'boot s':>8} {'items s':>8} {'items/min':>10}")
    for row in rows:
        extra = f"  ({row['per_gpu']:.1f} per GPU)" if "per_gpu" in row else ""
        print(f"{row['label']:<24} {row['boot']:>8.1f} {row['run']:>8.1f} {row['per_minute']:>10.1f}{extra}")
    print(f"ratio Ray ({args.workers} workers) / in process: {rows[1]['per_minute'] / rows[0]['per_minute']:.2f}x")


if __name__ == "__main__":
    main()
