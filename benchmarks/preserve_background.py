"""Background preservation: PSNR / SSIM outside the edit mask, before and after Preserve Background.

Two sources of edits, each compared with its source outside the mask (SmartEdit's Reason-Edit
convention, cli/batch/metrics.py: both pictures multiplied by 1 - mask; at full size and at the
reference's 256 x 256):

1. synthetic: a 1536 x 1024 scene edited as SmartEdit does it: squashed to 256 x 256, the object
   recoloured, the whole picture regenerated with a small colour drift and noise, upscaled back;
2. self-check: example_workflows/smartedit_full_resolution.json run in ComfyUI on the self-check's tiny
   random SmartEdit weights (needs COMFYUI_PATH), its raw upscaled edit against its composite.

"after" must be exact outside the mask (PSNR inf, SSIM 1) by construction.

    [COMFYUI_PATH=/path/to/ComfyUI] python benchmarks/preserve_background.py [--thumbnail out.jpg]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

from pack_import import ROOT, import_pack

SCENE_SIZE = (1536, 1024)
MODEL_SIZE = 256
THRESHOLD, FEATHER = 0.5, 16  # the full-resolution example's settings
DRIFT_GAIN, DRIFT_OFFSET, REGEN_NOISE = (1.04, 0.97, 0.93), (0.02, 0.0, -0.01), 0.01


def synthetic_scene(width: int, height: int):
    """(source IMAGE [1, H, W, 3], object MASK [1, H, W]): sky, textured ground, a table and a red 'apple'."""
    import torch

    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None, :].expand(height, width)
    sky = torch.stack([0.45 + 0.3 * y, 0.6 + 0.25 * y, 0.95 - 0.1 * y], -1)
    texture = 0.05 * torch.sin(x * 310) * torch.sin(y * 170) + 0.03 * torch.randn(height, width,
                                                                                    generator=torch.Generator().manual_seed(0))
    ground = torch.stack([0.35 + texture, 0.5 + texture, 0.2 + texture], -1)
    image = torch.where((y > 0.55)[..., None], ground, sky)
    table = (x > 0.25) & (x < 0.75) & (y > 0.5) & (y < 0.62)
    image = torch.where(table[..., None], torch.tensor([0.55, 0.4, 0.3]), image)
    apple = ((x - 0.5) * width / height) ** 2 + (y - 0.42) ** 2 < 0.09 ** 2
    shade = (0.75 + 0.25 * (0.42 - y) / 0.09).clamp(0.5, 1.0)[..., None]
    image = torch.where(apple[..., None], torch.tensor([0.85, 0.1, 0.1]) * shade, image)
    return image.clamp(0, 1).unsqueeze(0), apple.float().unsqueeze(0)


def simulated_model_edit(source, mask):
    """What a 256-px editing model returns, upscaled back: the object recoloured, the rest regenerated."""
    import torch

    from lmm_edit.loaders.compositing import resize_image, resize_mask

    height, width = source.shape[1:3]
    small = resize_image(source, MODEL_SIZE, MODEL_SIZE)
    region = resize_mask(mask, MODEL_SIZE, MODEL_SIZE).unsqueeze(-1)
    green = small[..., [1, 0, 2]]  # red apple -> green apple, its shading kept
    edited = small * (1 - region) + green * region
    edited = edited * torch.tensor(DRIFT_GAIN) + torch.tensor(DRIFT_OFFSET)
    edited = edited + REGEN_NOISE * torch.randn(edited.shape, generator=torch.Generator().manual_seed(1))
    return resize_image(edited.clamp(0, 1), height, width)


def _pil(image):
    import numpy as np
    from PIL import Image

    return Image.fromarray((image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8))


def _pil_mask(mask):
    import numpy as np
    from PIL import Image

    return Image.fromarray(((mask[0] > 0).numpy() * 255).astype(np.uint8), mode="L")


def outside_scores(edited, source, region_pil, ideal=None) -> dict[str, float]:
    """PSNR / SSIM outside the mask at full size and at 256 x 256 (cli/batch/metrics.py); with the ideal edit,
    also PSNR inside the mask against it (both multiplied by the mask, full size)."""
    from lmm_edit.cli.batch.metrics import edit_metrics

    full = edit_metrics(edited, source, mask=region_pil, size=None, target=ideal)
    small = edit_metrics(edited, source, mask=region_pil)
    return dict(psnr=full["psnr_outside"], ssim=full["ssim_outside"], psnr_256=small["psnr_outside"],
                ssim_256=small["ssim_outside"], inside=full.get("psnr_inside", float("nan")))


def _row(label: str, scores: dict[str, float]) -> str:
    return (f"{label:<36} {scores['psnr']:>8.2f} {scores['ssim']:>7.4f} {scores['psnr_256']:>9.2f} "
            f"{scores['ssim_256']:>8.4f} {scores['inside']:>14.2f}")


def synthetic_rows() -> list[str]:
    from lmm_edit.loaders.compositing import blend_weights, preserve_background

    source, mask = synthetic_scene(*SCENE_SIZE)
    raw = simulated_model_edit(source, mask)
    region = _pil_mask(blend_weights(mask, *source.shape[1:3], threshold=THRESHOLD))
    region_mask = (mask[0] > 0)[None, ..., None]
    ideal = _pil(source * ~region_mask + source[..., [1, 0, 2]] * region_mask)  # the recolour without any drift
    rows = [_row("synthetic: raw model edit", outside_scores(_pil(raw), _pil(source), region, ideal))]
    for feather in (0, FEATHER):
        for mode in ("off", "mean", "mean_std"):
            start = time.perf_counter()
            out, _ = preserve_background(raw, source, mask, threshold=THRESHOLD, feather=feather, colour_match=mode)
            seconds = time.perf_counter() - start
            scores = outside_scores(_pil(out), _pil(source), region, ideal)
            rows.append(_row(f"synthetic: feather {feather}, colour {mode}", scores) + f"   ({seconds:.2f} s)")
    return rows


def self_check_rows(comfyui_path: str) -> list[str]:
    from lmm_edit.cli.comfy_session import ComfySession
    from lmm_edit.cli.edit import JOBS, _write_self_check_models
    from lmm_edit.selfcheck.images import write_test_image

    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        session = ComfySession(comfyui_path, output_dir=work / "out", input_dir=work / "in", temp_dir=work / "tmp",
                               models_dir=work / "models", cpu=True)
        for category, folder in _write_self_check_models(JOBS["smartedit"], work / "weights").items():
            session.folder_paths.add_model_folder_path(category, str(folder), is_default=True)
        write_test_image(work / "in" / "example.png", 1024, 640)
        workflow = json.loads((ROOT / "example_workflows" / "smartedit_full_resolution.json").read_text())
        prompt = session.ui_to_api(workflow)
        preserve = next(k for k, v in prompt.items() if v["class_type"] == "LMMEdit_PreserveBackground")
        for node in prompt.values():
            if node["class_type"] == "BasicScheduler":
                node["inputs"]["steps"] = 4
        prompt["901"] = {"class_type": "SaveImage", "inputs": {"images": prompt[preserve]["inputs"]["source"],
                                                               "filename_prefix": "source"}}
        prompt["902"] = {"class_type": "SaveImage", "inputs": {"images": prompt[preserve]["inputs"]["edited"],
                                                               "filename_prefix": "raw"}}
        prompt["903"] = {"class_type": "MaskToImage", "inputs": {"mask": [preserve, 1]}}
        prompt["904"] = {"class_type": "SaveImage", "inputs": {"images": ["903", 0], "filename_prefix": "blend"}}
        result = session.run(prompt)
        if not result.success:
            raise SystemExit(f"the self-check workflow failed: {result.error}")
        from PIL import Image

        def saved(node_id):
            (item,) = result.outputs[node_id]["images"]
            return Image.open(work / "out" / item["subfolder"] / item["filename"])

        save_node = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage" and int(k) < 900)
        source, raw, out = saved("901").convert("RGB"), saved("902").convert("RGB"), saved(save_node).convert("RGB")
        region = saved("904").convert("L").point(lambda v: 255 if v > 0 else 0)
        return [_row("self-check: raw upscaled edit", outside_scores(raw, source, region)),
                _row("self-check: preserved (mean_std)", outside_scores(out, source, region))]


def write_thumbnail(path: pathlib.Path) -> None:
    """Template thumbnail: full-size source | 256-px edit, upscaled | preserved (512 x 288)."""
    from PIL import Image, ImageDraw

    from lmm_edit.loaders.compositing import preserve_background

    source, mask = synthetic_scene(*SCENE_SIZE)
    raw = simulated_model_edit(source, mask)
    out, _ = preserve_background(raw, source, mask, threshold=THRESHOLD, feather=FEATHER, colour_match="mean_std")
    sheet = Image.new("RGB", (512, 288), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for index, (image, label) in enumerate([(source, "full size"), (raw, "256-px edit"), (out, "preserved")]):
        sheet.paste(_pil(image).resize((164, 110)), (4 + index * 170, 80))
        draw.text((8 + index * 170, 196), label, fill=(230, 230, 230))
    draw.text((8, 24), "SmartEdit at full resolution: only the edited region changes", fill=(255, 255, 255))
    sheet.save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (self-check part)")
    parser.add_argument("--thumbnail", type=pathlib.Path, help="also write the example's template thumbnail here")
    args = parser.parse_args()
    import_pack()
    if args.thumbnail:
        write_thumbnail(args.thumbnail)
    rows = synthetic_rows()
    if args.comfyui:
        rows += self_check_rows(args.comfyui)
    else:
        rows.append("self-check: skipped (set COMFYUI_PATH or --comfyui)")
    print(f"\noutside the mask (threshold {THRESHOLD}, feather {FEATHER}); 256 = resized as SmartEdit's metrics script")
    print(f"{'edit':<36} {'PSNR dB':>8} {'SSIM':>7} {'PSNR 256':>9} {'SSIM 256':>8} {'inside vs ideal':>14}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
