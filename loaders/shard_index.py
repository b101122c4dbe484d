"""Sharded weights: a `*.index.json` (`weight_map`: tensor key -> shard file name) and its shards.

transformers' `save_pretrained` writes `model.safetensors.index.json` or `pytorch_model.bin.index.json` next to
the shards. Every way the index and the shards can disagree raises ``ModelFileError`` naming the index or the
shard: no `weight_map`, a shard listed but absent, a tensor the index places in a shard that does not hold it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelFileError
from .weight_files import read_json, read_shapes

INDEX_FIX = "download the index and every shard it lists again, from the same revision, into the same folder"


def read_shard_index(index: str | Path) -> dict[str, Path]:
    """Tensor key -> shard path, after checking the index has a `weight_map` and every listed shard exists."""
    index = Path(index)
    data = read_json(index, fix=INDEX_FIX)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        if weight_map is None:
            found = f"no weight_map (keys {sorted(data)})"
        elif isinstance(weight_map, dict) and not weight_map:
            found = "an empty weight_map"
        else:
            found = f"a weight_map that is not {{key: file name}} (a {type(weight_map).__name__})"
        raise ModelFileError(index, 'a shard index with a "weight_map" {tensor key: shard file name}', found, INDEX_FIX)
    folder = index.parent
    shards = sorted(set(weight_map.values()))
    missing = [name for name in shards if not (folder / name).is_file()]
    if missing:
        raise ModelFileError(
            folder / missing[0], f"the {len(shards)} shards named by {index.name}",
            f"{len(missing)} missing: {', '.join(missing[:4])}", "download every shard listed in the index into the same folder",
        )
    return {key: folder / name for key, name in weight_map.items()}


def shape_in_shard(files: dict[str, Path], key: str, index: Path | None = None) -> tuple[int, ...]:
    """The shape of ``key`` read from the shard the index names; a shard without it raises ``ModelFileError``."""
    shard = files[key]
    shapes = read_shapes(shard)
    if key not in shapes:
        where = f" ({index.name} places it here)" if index is not None else ""
        raise ModelFileError(shard, f"the tensor {key}{where}", f"{len(shapes)} tensors without it", INDEX_FIX)
    return shapes[key]


def check_shard_holds(shard: Path, read: set[str] | dict, files: dict[str, Path], index: Path,
                      wanted=lambda key: True) -> None:
    """Every wanted key the index places in ``shard`` is among the keys ``read`` from it."""
    absent = sorted(k for k, f in files.items() if f == shard and wanted(k) and k not in read)
    if absent:
        raise ModelFileError(
            shard, f"the tensor {absent[0]} ({index.name} places it here)",
            f"a shard without it ({len(absent)} listed tensors absent: {', '.join(absent[:3])})", INDEX_FIX,
        )
