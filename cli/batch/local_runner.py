"""Items in this process: one EditWorker (one ComfyUI session), one item after the other."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .inputs import ItemInputs
from .worker import EditWorker, ItemResult


class LocalRunner:
    def __init__(self, worker: EditWorker) -> None:
        self.worker = worker
        self.names = [worker.name]

    def run(self, tasks: Iterable[ItemInputs]) -> Iterator[ItemResult]:
        for inputs in tasks:
            yield self.worker.run(inputs)

    def close(self) -> None:
        self.worker.close()
