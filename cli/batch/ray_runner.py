"""Items on a Ray cluster: one actor per worker, each an EditWorker (a ComfyUI session with the pack).

The driver hands each actor whole groups (items sharing image, instruction and mask, which differ
only in seed) so the group's LMM encode runs once, keeps two calls queued per actor so it never
idles, and yields results as they finish. Only the driver writes results (command.py).
Ray docs: actors (docs.ray.io/en/latest/ray-core/actors.html), ray.wait for results as they come.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator

from .inputs import ItemInputs
from .store import FAILED
from .worker import EditWorker, ItemResult, WorkerOptions, WorkerStartError
from .workflow import Workflow

IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: the actor starts the next item at once
CLOSE_TIMEOUT_S = 60  # for the actors to remove their scratch folders before they are killed


class RayMissing(RuntimeError):
    pass


def import_ray():
    """Ray, or a message saying how to install it (checked once, before anything starts)."""
    try:
        import ray
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        raise RayMissing("--ray needs Ray, an optional extra: pip install 'lmm-edit[scale]' (or pip install "
                         "'ray>=2.9') into ComfyUI's Python") from error
    return ray


class EditActor:
    """The Ray actor: one EditWorker, booted in the actor's process."""

    def __init__(self, options: WorkerOptions, workflow: Workflow) -> None:
        self.worker = EditWorker(options, workflow)

    def ready(self) -> str:
        return self.worker.name

    def run(self, inputs: ItemInputs) -> ItemResult:
        return self.worker.run(inputs)

    def close(self) -> None:
        self.worker.close()  # its scratch folder (staged pictures; the self-check's weights)


def _pack_import_path() -> tuple[str, pathlib.Path | None]:
    """A folder from which ``import lmm_edit`` finds this pack, for the actors' PYTHONPATH, and the
    temporary folder made for it (a checkout under another name gets a link named lmm_edit), if any."""
    pack = pathlib.Path(sys.modules[__name__.split(".")[0]].__path__[0]).resolve()
    if pack.name == "lmm_edit":
        return str(pack.parent), None
    holder = pathlib.Path(tempfile.mkdtemp(prefix="lmm_edit_ray_path_"))
    (holder / "lmm_edit").symlink_to(pack, target_is_directory=True)
    return str(holder), holder


def _group_key(inputs: ItemInputs) -> tuple:
    return inputs.image_name, inputs.item.instruction, inputs.mask_name


class RayRunner:
    def __init__(self, address: str, options: WorkerOptions, workflow: Workflow, *, workers: int | None,
                 gpus_per_worker: float | None) -> None:
        """address: "local" (a throwaway cluster in this process), "auto" (the running cluster) or host:port."""
        self.ray = ray = import_ray()
        self.started_here = not ray.is_initialized()
        self.link_folder = None
        if self.started_here:
            pack_path, self.link_folder = _pack_import_path()
            path = os.pathsep.join(p for p in (pack_path, os.environ.get("PYTHONPATH")) if p)
            common = dict(runtime_env={"env_vars": {"PYTHONPATH": path}}, log_to_driver=False)
            if address == "local":  # one CPU per actor: ray.init(num_cpus=N) as Ray's local-cluster docs
                ray.init(num_cpus=max(workers or 1, 1), num_gpus=0 if gpus_per_worker == 0 else None,
                         include_dashboard=False, **common)
            else:
                ray.init(address=address, **common)
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus_per_worker is None:
            gpus_per_worker = 1 if gpus else 0
        if workers is None:
            workers = int(gpus // gpus_per_worker) if gpus_per_worker else 1
        if workers < 1:
            raise WorkerStartError(f"the cluster has {gpus} GPUs: no room for one worker of {gpus_per_worker} GPUs "
                                   "(see --gpus-per-worker, --workers)")
        options = dataclasses.replace(options, cpu=gpus_per_worker == 0)  # an actor without a GPU must not take one
        actor_class = ray.remote(EditActor).options(num_cpus=1, num_gpus=gpus_per_worker)
        self.actors = [actor_class.remote(options, workflow) for _ in range(workers)]
        try:
            self.names = ray.get([actor.ready.remote() for actor in self.actors])  # a worker's boot error shows here
        except ray.exceptions.RayActorError as error:
            self.close()
            raise WorkerStartError(f"a Ray worker failed to start: {error}") from error

    def run(self, tasks: Iterable[ItemInputs]) -> Iterator[ItemResult]:
        ray = self.ray
        stream = iter(tasks)
        lookahead: list[ItemInputs] = []
        queues = {index: deque() for index in range(len(self.actors))}
        in_flight: dict = {}  # ObjectRef -> (actor index, inputs)
        orphans: deque = deque()  # items of a worker that died, for the others

        def next_group() -> list[ItemInputs]:
            if orphans:
                return [orphans.popleft()]
            group = lookahead[:] or [next(stream, None)]
            lookahead.clear()
            if group[0] is None:
                return []
            for following in stream:
                if _group_key(following) != _group_key(group[0]):
                    lookahead.append(following)
                    break
                group.append(following)
            return group

        def feed(index: int) -> None:
            busy = sum(1 for owner, _ in in_flight.values() if owner == index)
            while busy < IN_FLIGHT_PER_ACTOR:
                if not queues[index]:
                    queues[index].extend(next_group())
                    if not queues[index]:
                        return
                inputs = queues[index].popleft()
                in_flight[self.actors[index].run.remote(inputs)] = (index, inputs)
                busy += 1

        alive = set(queues)
        for index in alive:
            feed(index)
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            index, inputs = in_flight.pop(ref)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayActorError as error:
                yield _failed(inputs, f"worker {self.names[index]} died: {error}")
                if index in alive:
                    alive.discard(index)
                    orphans.extend(queues.pop(index))
                if not alive:
                    raise RuntimeError(f"every Ray worker died; the last said: {error}") from error
                continue
            except ray.exceptions.RayTaskError as error:
                yield _failed(inputs, f"worker {self.names[index]}: {error}")
            for other in sorted(alive):
                feed(other)

    def close(self) -> None:
        closing = [actor.close.remote() for actor in self.actors]
        self.ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)  # a dead actor cannot answer
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started_here:
            self.ray.shutdown()
        if self.link_folder is not None:
            shutil.rmtree(self.link_folder, ignore_errors=True)


def _failed(inputs: ItemInputs, message: str) -> ItemResult:
    return ItemResult(dict(id=inputs.item.id, hash=inputs.hash, type=inputs.item.type, status=FAILED, error=message))

