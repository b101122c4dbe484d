"""Reading `imagebind_huge.pth`: the vision and audio tensors, their sizes, and the rename to our modules.

The release file (https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth, the URL of
facebookresearch/ImageBind @ 3fcf5c9 `imagebind_model.imagebind_huge`) is a `torch.save` of
`ImageBindModel.state_dict()` with all six modalities; only the keys of the vision and audio encoders are read
(mmap: the others are never loaded). A `.safetensors` file with the same keys is read as well.

Sizes come from the tensor shapes: widths, depths, MLP widths, output width, patch kernels, the number of
positions, and whether a trunk has the pre-transformer LayerNorm or `bias_k`/`bias_v`. What the shapes cannot
tell comes from the `ImageBindModel` constructor arguments: the attention head counts and the audio patch
stride. They are read from an optional JSON of those arguments (`vision_num_heads`, `audio_num_heads`,
`audio_stride`, ...), else they are imagebind_huge's (`IMAGEBIND_HUGE_ARGS`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..weight_files import check_file, load_torch_file, open_safetensors
from .imagebind_audio_input import MEL_BINS, TARGET_FRAMES
from .imagebind_encoders import IMAGE_TIME_REPEATS, AudioEncoderConfig, VisionEncoderConfig
from .imagebind_trunk import TrunkConfig
from .imagebind_vision_input import IMAGE_SIZE

RELEASE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"  # imagebind_model.imagebind_huge
KWARGS_FILE_NAME = "imagebind_kwargs.json"  # looked for next to the weights when no JSON is named
# imagebind_model.imagebind_huge(): vision_num_heads=16; ImageBindModel defaults: audio_num_heads=12, audio_stride=10
IMAGEBIND_HUGE_ARGS: Mapping[str, int] = {"vision_num_heads": 16, "audio_num_heads": 12, "audio_stride": 10}
MODALITIES = ("vision", "audio")
LOGIT_SCALE_KEY = "modality_postprocessors.audio.1.log_logit_scale"

# one required key per part, in the release's names; the first missing one is named in the error
_REQUIRED = {
    "vision": (
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight",
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed",
        "modality_trunks.vision.blocks.0.norm_1.weight",
        "modality_trunks.vision.blocks.0.mlp.fc1.weight",
        "modality_heads.vision.2.weight",
    ),
    "audio": (
        "modality_preprocessors.audio.rgbt_stem.proj.weight",
        "modality_preprocessors.audio.pos_embedding_helper.pos_embed",
        "modality_trunks.audio.blocks.0.norm_1.weight",
        "modality_trunks.audio.blocks.0.mlp.fc1.weight",
        "modality_heads.audio.2.weight",
    ),
}
_PREPROCESSOR_KEYS = {
    "cls_token": "cls_token",
    "pos_embedding_helper.pos_embed": "pos_embed",
    "rgbt_stem.proj.1.weight": "patch_embed.weight",  # vision: proj = Sequential(PadIm2Video, Conv3d)
    "rgbt_stem.proj.weight": "patch_embed.weight",  # audio: proj = the Conv2d itself
    "rgbt_stem.norm_layer.weight": "patch_norm.weight",
    "rgbt_stem.norm_layer.bias": "patch_norm.bias",
}
_HEAD_KEYS = {"0.weight": "head_norm.weight", "0.bias": "head_norm.bias", "2.weight": "head_proj.weight"}


# The pack has one load-time error class; this name stays for the callers of the any2pix package.


def _fix_weights() -> str:
    return f"use ImageBind-huge's release file imagebind_huge.pth ({RELEASE_URL})"


def is_our_key(key: str) -> bool:
    """A tensor of the vision or audio encoder (the other modalities of the file are not read)."""
    return any(key.startswith(f"{part}.{m}.") for m in MODALITIES for part in (
        "modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors"))


def _own(key: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy in its own storage, cast to `dtype` (the frozen logit-scale buffer stays fp32)."""
    target = torch.float32 if key == LOGIT_SCALE_KEY else dtype
    return tensor.to(target, copy=True) if tensor.is_floating_point() else tensor.clone()


def read_encoder_tensors(path: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The vision and audio tensors of an ImageBind state dict (`.pth`/`.pt`/`.bin` or `.safetensors`), on the CPU
    in `dtype`; the other modalities are not read (the `.pth` is memory-mapped)."""
    if not path.is_file():
        raise ModelFileError(path, "ImageBind's weight file", "nothing at this path", _fix_weights())
    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            keys = list(handle.keys())
            tensors = {k: _own(k, handle.get_tensor(k), dtype) for k in keys if is_our_key(k)}
    else:
        state = load_torch_file(
            path, mmap=zipfile.is_zipfile(path),
            expected_object="ImageBindModel's state dict (a dict of tensors)", pickle_fix=_fix_weights(),
        )
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            found = f"a {type(state).__name__}"
            if isinstance(state, Mapping):
                found += f" with keys {list(state)[:5]}"
            raise ModelFileError(path, "ImageBindModel's state dict (a dict of tensors)", found, _fix_weights())
        keys = list(state)
        tensors = {k: _own(k, v, dtype) for k, v in state.items() if is_our_key(k)}
    for modality, required in _REQUIRED.items():
        missing = [k for k in required if k not in tensors]
        if missing:
            what = "no ImageBind keys at all" if not tensors else f"no {modality} encoder"
            raise ModelFileError(
                path, f"ImageBind's {modality} encoder (keys such as {missing[0]})",
                f"{what} among {len(keys)} tensors (first keys: {keys[:3]})", _fix_weights(),
            )
    return tensors


def read_constructor_args(weights: Path, kwargs_file: Path | None) -> tuple[dict, Path | None]:
    """The `ImageBindModel` constructor arguments of the named JSON, else of `imagebind_kwargs.json` next to the
    weights, else {} (imagebind_huge's). Returns (arguments, the file read or None)."""
    if kwargs_file is None:
        candidate = weights.parent / KWARGS_FILE_NAME
        if not candidate.is_file():
            return {}, None
        kwargs_file = candidate
    if not kwargs_file.is_file():
        raise ModelFileError(kwargs_file, "a JSON of ImageBindModel constructor arguments", "nothing at this path",
                                 "name an existing file, or none to use imagebind_huge's arguments")
    try:
        args = json.loads(check_file(kwargs_file, "a JSON file").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(kwargs_file, "a JSON of ImageBindModel constructor arguments", f"invalid JSON ({err})",
                                 "restore the file, or remove it to use imagebind_huge's arguments") from err
    if not isinstance(args, dict):
        raise ModelFileError(kwargs_file, "a JSON object of ImageBindModel constructor arguments",
                                 f"a JSON {type(args).__name__}", "write the arguments as one object")
    return args, kwargs_file


def _trunk_config(shapes: Mapping[str, tuple[int, ...]], modality: str, heads: int, source: Path) -> TrunkConfig:
    prefix = f"modality_trunks.{modality}."
    width = shapes[prefix + "blocks.0.norm_1.weight"][0]
    blocks = 0
    while f"{prefix}blocks.{blocks}.norm_1.weight" in shapes:
        blocks += 1
    if heads <= 0 or width % heads:
        where = "in this JSON" if source.suffix == ".json" else f"in {KWARGS_FILE_NAME} next to the weights"
        raise ModelFileError(
            source, f"an attention head count dividing the {modality} width {width}", f"{modality}_num_heads = {heads}",
            f"give the ImageBindModel constructor arguments of these weights ({modality}_num_heads) {where}; "
            "without them imagebind_huge's are used (vision 16, audio 12)",
        )
    return TrunkConfig(
        width=width, blocks=blocks, heads=heads, mlp_hidden=shapes[prefix + "blocks.0.mlp.fc1.weight"][0],
        pre_norm=prefix + "pre_transformer_layer.0.weight" in shapes, bias_kv=prefix + "blocks.0.attn.bias_k" in shapes,
    )


@dataclass(frozen=True)
class ImageBindConfig:
    vision: VisionEncoderConfig
    audio: AudioEncoderConfig

    @classmethod
    def from_shapes(
        cls, shapes: Mapping[str, tuple[int, ...]], args: Mapping[str, object], weights: Path, args_file: Path | None
    ) -> ImageBindConfig:
        """Sizes from the tensor shapes; head counts and audio stride from `args` (else imagebind_huge's)."""
        merged = {**IMAGEBIND_HUGE_ARGS, **args}
        source = args_file if args_file is not None else weights
        vision_trunk = _trunk_config(shapes, "vision", int(merged["vision_num_heads"]), source)
        audio_trunk = _trunk_config(shapes, "audio", int(merged["audio_num_heads"]), source)

        conv3d = shapes["modality_preprocessors.vision.rgbt_stem.proj.1.weight"]  # [W, 3, kt, kh, kw]
        kernel = tuple(conv3d[2:])
        grid = (IMAGE_TIME_REPEATS // kernel[0], IMAGE_SIZE // kernel[1], IMAGE_SIZE // kernel[2])
        vision = VisionEncoderConfig(vision_trunk, shapes["modality_heads.vision.2.weight"][0], kernel, grid)

        conv2d = shapes["modality_preprocessors.audio.rgbt_stem.proj.weight"]  # [W, 1, k, k]
        k, stride = conv2d[2], int(merged["audio_stride"])
        audio_grid = ((MEL_BINS - k) // stride + 1, (TARGET_FRAMES - k) // stride + 1)
        audio = AudioEncoderConfig(audio_trunk, shapes["modality_heads.audio.2.weight"][0], k, stride, audio_grid)

        config = cls(vision, audio)
        config._check_positions(shapes, weights)
        if args_file is not None:
            config._check_args(args, args_file)
        return config

    def _check_positions(self, shapes: Mapping[str, tuple[int, ...]], weights: Path) -> None:
        for modality, grid, what in (
            ("vision", self.vision.grid, f"{IMAGE_SIZE} x {IMAGE_SIZE} images, patch kernel {self.vision.kernel}"),
            ("audio", self.audio.grid, f"{MEL_BINS} mel x {TARGET_FRAMES} frame clips, kernel {self.audio.kernel}, "
                                       f"stride {self.audio.stride}"),
        ):
            found = shapes[f"modality_preprocessors.{modality}.pos_embedding_helper.pos_embed"][1]
            expected = 1 + grid[0] * grid[1] * (grid[2] if len(grid) == 3 else 1)
            if found != expected:
                raise ModelFileError(
                    weights, f"{expected} {modality} positions (CLS + the patches of {what})", f"{found}",
                    "use weights trained on ImageBind's input sizes; for the audio stride, give the constructor "
                    "arguments (audio_stride) in the JSON next to the weights",
                )

    def _check_args(self, args: Mapping[str, object], args_file: Path) -> None:
        """The sizes the JSON states must be those of the weights (a JSON of another model is an error)."""
        from_shapes = {
            "vision_embed_dim": self.vision.trunk.width, "vision_num_blocks": self.vision.trunk.blocks,
            "audio_embed_dim": self.audio.trunk.width, "audio_num_blocks": self.audio.trunk.blocks,
            "out_embed_dim": self.vision.out_dim, "kernel_size": list(self.vision.kernel),
            "audio_kernel_size": self.audio.kernel, "audio_num_mel_bins": MEL_BINS,
            "audio_target_len": TARGET_FRAMES,
        }
        for name, value in from_shapes.items():
            if name in args and args[name] != value:
                raise ModelFileError(
                    args_file, f"{name} = {value} (what the weights and ImageBind's preprocessing give)",
                    f"{name} = {args[name]}", "use the constructor arguments of these weights, or remove the JSON",
                )


def encoder_state(
    tensors: Mapping[str, torch.Tensor], modality: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The release keys of one modality renamed to ImageBindVisionEncoder / ImageBindAudioEncoder names.

    Returns (state, release name of each key of state). A key of the modality with no counterpart keeps its
    release name, so that the strict load reports it.
    """
    pre, trunk, head = (f"modality_{p}.{modality}." for p in ("preprocessors", "trunks", "heads"))
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in tensors.items():
        if key.startswith(pre):
            name = _PREPROCESSOR_KEYS.get(key[len(pre):], key)
        elif key.startswith(trunk):
            rest = key[len(trunk):].replace("pre_transformer_layer.0.", "pre_norm.")
            name = "trunk." + rest.replace("attn.in_proj_weight", "attn.in_proj.weight").replace(
                "attn.in_proj_bias", "attn.in_proj.bias")
        elif key.startswith(head):
            name = _HEAD_KEYS.get(key[len(head):], key)
        elif key == LOGIT_SCALE_KEY and modality == "audio":
            name = "log_logit_scale"
        else:
            continue
        state[name] = value
        origin[name] = key
    return state, origin


def release_key(modality: str, name: str) -> str:
    """The name in the release file of a tensor of our encoder (for messages about missing tensors)."""
    if name == "log_logit_scale":
        return LOGIT_SCALE_KEY
    if name.startswith("trunk."):
        rest = name[len("trunk."):].replace("pre_norm.", "pre_transformer_layer.0.")
        rest = rest.replace("attn.in_proj.weight", "attn.in_proj_weight").replace("attn.in_proj.bias", "attn.in_proj_bias")
        return f"modality_trunks.{modality}.{rest}"
    heads = {ours: theirs for theirs, ours in _HEAD_KEYS.items()}
    if name in heads:
        return f"modality_heads.{modality}.{heads[name]}"
    if name == "patch_embed.weight":
        return f"modality_preprocessors.{modality}.rgbt_stem." + ("proj.1.weight" if modality == "vision" else "proj.weight")
    pre = {ours: theirs for theirs, ours in _PREPROCESSOR_KEYS.items() if not theirs.startswith("rgbt_stem.proj")}
    return f"modality_preprocessors.{modality}.{pre.get(name, name)}"
