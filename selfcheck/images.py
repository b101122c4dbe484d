"""A smooth, deterministic RGB test picture (no randomness: every run edits the same pixels)."""

from __future__ import annotations

import pathlib


def write_test_image(path: pathlib.Path, width: int, height: int) -> pathlib.Path:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([127 + 100 * np.sin(x / 7.0), 127 + 100 * np.cos(y / 5.0), 127 + 60 * np.sin((x + y) / 9.0)], -1)
    Image.fromarray(rgb.astype("uint8")).save(path)
    return path
