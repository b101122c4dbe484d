"""Each item's files, read and checked on the driver before any worker spends time on them.

The bytes travel with the item (to a Ray actor on another node too), so workers need no access to
the driver's files. A problem here fails the item with a message; the run goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .manifest import Item


class ItemInputError(ValueError):
    pass


@dataclass(frozen=True)
class ItemInputs:
    item: Item
    hash: str
    image: bytes
    image_name: str  # content-addressed, so the same picture keeps the same name (and ComfyUI's cache)
    mask: bytes | None = None
    mask_name: str | None = None
    target: bytes | None = None


def item_hash(workflow_graph: dict, item: Item, options: dict) -> str:
    """Identifies a result: the workflow JSON, the item's fields and the options that change the output."""
    payload = json.dumps({"workflow": workflow_graph, "item": item.fields(), "options": options},
                         sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_picture(path: str, column: str) -> tuple[bytes, tuple[int, int]]:
    file = pathlib.Path(path)
    if not file.is_file():
        raise ItemInputError(f"{column} {path} does not exist")
    data = file.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            return data, picture.size
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ItemInputError(f"{column} {path} is not a readable image ({error})") from error


def _name(data: bytes, path: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()[:20]}{pathlib.Path(path).suffix.lower() or '.png'}"


def read_inputs(item: Item, item_hash_: str, with_target: bool) -> ItemInputs:
    image, size = _read_picture(item.image, "image")
    mask = mask_name = target = None
    if item.mask:
        mask, mask_size = _read_picture(item.mask, "mask")
        if mask_size != size:
            raise ItemInputError(f"mask {item.mask} is {mask_size[0]}x{mask_size[1]} but the image is "
                                 f"{size[0]}x{size[1]}: the mask must have the image's size")
        mask_name = _name(mask, item.mask)
    if with_target and item.target_image:
        target, _ = _read_picture(item.target_image, "target_image")
    return ItemInputs(item=item, hash=item_hash_, image=image, image_name=_name(image, item.image), mask=mask,
                      mask_name=mask_name, target=target)
