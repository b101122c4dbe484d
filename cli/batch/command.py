"""``python -m lmm_edit batch``: a workflow over a manifest, resumable, in process or on a Ray cluster.

For each item: DIR/images/<id>.png and one line in DIR/results.jsonl. Running the same command again
skips every item already done with the same workflow, item fields and options (the line's hash).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

from ..comfy_session import ComfyUINotFound, find_comfyui
from ..edit import SELF_CHECK_STEPS
from .inputs import ItemInputError, item_hash, read_inputs
from .manifest import Item, ManifestError, read_manifest
from .store import DONE, FAILED, RESULTS, ResultsStore, read_results
from .summary import format_table, summarize, write_summary
from .worker import ItemResult, WorkerOptions, WorkerStartError
from .workflow import Workflow, WorkflowError, load_workflow

SUMMARY = "summary.csv"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmm_edit batch", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", required=True, help="an example (instructpix2pix, smartedit) or a workflow "
                        "JSON (UI or API format) with nodes titled 'Input image' and 'Instruction' (see README)")
    parser.add_argument("--manifest", required=True, type=pathlib.Path,
                        help="JSONL or CSV: id, image, instruction [, mask, seed, target_image, target_caption, type]")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder (images/, results.jsonl)")
    parser.add_argument("--metrics", action="store_true", help="score each edit against its targets/mask/caption")
    parser.add_argument("--metrics-size", type=int, default=256,
                        help="pictures are resized to this square for the metrics (SmartEdit's 256; 0 = the edit's size)")
    parser.add_argument("--clip-model", help="folder name in models/clip_vision/ for the CLIP scores "
                        "(default: clip-vit-large-patch14, else the first CLIP folder found)")
    parser.add_argument("--ray", metavar="auto|local|ADDRESS", help="run on a Ray cluster: auto = the running one "
                        "(ray start --head), local = a throwaway one on this machine, or its address host:port")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray worker (default: 1 when the cluster "
                        "has GPUs, else 0 = CPU)")
    parser.add_argument("--workers", type=int, help="Ray workers (default: the cluster's GPUs / --gpus-per-worker; "
                        "1 on CPU)")
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH, or the one this pack is in)")
    parser.add_argument("--steps", type=int, help=f"sampling steps (default: the workflow's; {SELF_CHECK_STEPS} "
                        "in the self-check)")
    parser.add_argument("--models", help="an extra models folder laid out like ComfyUI/models/, searched first")
    parser.add_argument("--self-check", action="store_true",
                        help="example workflows on tiny random weights built by each worker (tests, set-up checks)")
    parser.add_argument("--cpu", action="store_true", help="run in process on the CPU even when CUDA is there")
    return parser


def _grouped(items: list[Item]) -> list[Item]:
    """Items sharing image, instruction and mask next to each other (in order of first appearance), so a
    worker runs them back to back and ComfyUI reuses the LMM encode across their seeds."""
    first: dict[tuple, int] = {}
    for index, item in enumerate(items):
        first.setdefault((item.image, item.instruction, item.mask), index)
    return sorted(items, key=lambda item: first[(item.image, item.instruction, item.mask)])


def _make_runner(args, options: WorkerOptions, workflow: Workflow):
    if args.ray:
        from .ray_runner import RayRunner

        return RayRunner(args.ray, options, workflow, workers=args.workers, gpus_per_worker=args.gpus_per_worker)
    from .local_runner import LocalRunner
    from .worker import EditWorker

    return LocalRunner(EditWorker(options, workflow))


def run_batch(items: list[Item], workflow: Workflow, options: WorkerOptions, out: pathlib.Path, make_runner,
              progress: bool = True) -> dict[str, int]:
    """Runs every item not yet done; returns counts (done, failed, skipped). make_runner() is called only
    when there is something to run."""
    store = ResultsStore(out)
    hashes = {item.id: item_hash(workflow.graph, item, options.hashed()) for item in items}
    done = store.done_ids(hashes)
    todo = _grouped([item for item in items if item.id not in done])
    counts = {DONE: 0, FAILED: 0, "skipped": len(items) - len(todo)}
    print(f"{len(items)} items: {counts['skipped']} already done, {len(todo)} to run -> {out}", flush=True)
    if not todo:
        store.close()
        return counts
    from tqdm import tqdm

    bar = None

    def record(result: ItemResult) -> None:
        line = result.record
        if result.png is not None:
            line = dict(line, output=store.write_image(line["id"], result.png))
        store.append(line)
        counts[line["status"]] += 1
        bar.set_postfix(failed=counts[FAILED], refresh=False)
        bar.update(1)

    def tasks():
        for item in todo:
            try:
                yield read_inputs(item, hashes[item.id], with_target=options.metrics)
            except ItemInputError as error:
                record(ItemResult(dict(id=item.id, hash=hashes[item.id], type=item.type, instruction=item.instruction,
                                       seed=item.seed, status=FAILED, seconds=0.0, error=str(error))))

    try:
        runner = make_runner()  # boots the worker(s): not counted in the bar's rate
    except BaseException:
        store.close()
        raise
    bar = tqdm(total=len(todo), unit="item", desc="batch", file=sys.stderr, disable=not progress)
    try:
        for result in runner.run(tasks()):
            record(result)
    finally:
        bar.close()
        runner.close()
        store.close()
    return counts


def current_records(out: pathlib.Path, items: list[Item], workflow: Workflow, options: WorkerOptions) -> list[dict]:
    """The latest done line of each manifest item made with the current workflow and options."""
    latest = {record["id"]: record for record in read_results(out / RESULTS) if "id" in record}
    records = []
    for item in items:
        record = latest.get(item.id)
        if record and record.get("status") == DONE and \
                record.get("hash") == item_hash(workflow.graph, item, options.hashed()):
            records.append(record)
    return records


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.ray:
            from .ray_runner import import_ray

            import_ray()
        elif args.workers is not None or args.gpus_per_worker is not None:
            raise ValueError("--workers and --gpus-per-worker spread items over Ray workers: add --ray local|auto")
        if args.metrics and importlib.util.find_spec("torchmetrics") is None:
            raise ValueError("--metrics needs torchmetrics: pip install 'lmm-edit[metrics]' (or torchmetrics>=1.6) "
                             "into ComfyUI's Python")
        workflow = load_workflow(args.workflow)
        items = read_manifest(args.manifest)
        comfyui = find_comfyui(args.comfyui)
    except (WorkflowError, ManifestError, ComfyUINotFound, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.self_check and workflow.job is None:
        print("error: --self-check runs the example workflows only", file=sys.stderr)
        return 2
    import torch

    options = WorkerOptions(
        comfyui=str(comfyui), steps=args.steps or (SELF_CHECK_STEPS if args.self_check else None),
        self_check=args.self_check, metrics=args.metrics, metrics_size=args.metrics_size,
        clip_name=args.clip_model, models_dir=args.models, cpu=args.cpu or not torch.cuda.is_available())
    try:
        counts = run_batch(items, workflow, options, args.out, lambda: _make_runner(args, options, workflow))
    except (WorkflowError, WorkerStartError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished items are in {args.out / 'results.jsonl'}; run the same command again to "
              "resume", file=sys.stderr)
        return 130
    print(f"{counts[DONE]} done, {counts[FAILED]} failed, {counts['skipped']} skipped (already done)")
    if args.metrics:
        rows = summarize(current_records(args.out, items, workflow, options))
        print(format_table(rows))
        print(f"wrote {write_summary(args.out / SUMMARY, rows)}")
    if counts[FAILED]:
        print(f"{counts[FAILED]} item(s) failed: their messages are in the 'error' field of "
              f"{args.out / 'results.jsonl'}; fix them and run the same command again", file=sys.stderr)
        return 1
    return 0
