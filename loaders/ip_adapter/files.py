"""Reading image-adapter files and recognising their family by keys.

Layouts read (docs/kernels.md, Shapes; diffusers ``loaders/ip_adapter.py`` ``load_ip_adapter``;
ComfyUI_IPAdapter_plus ``utils.py`` ``ipadapter_model_loader``):

- ``.bin`` / ``.pt`` / ``.pth``: ``torch.save`` of ``{"image_proj": {...}, "ip_adapter": {...}}``
  (h94/IP-Adapter releases); training checkpoints may call the second section ``adapter_modules``.
- ``.safetensors``: the same sections flattened, keys prefixed ``image_proj.`` / ``ip_adapter.``.
- An InsightEdit IAA file adds a ``mapper`` section (layout in ``iaa.py``).

Families recognised (``image_proj`` keys):

| family | keys | input |
|---|---|---|
| ``ip-adapter`` | ``proj.weight``, ``proj.bias``, ``norm.weight``, ``norm.bias`` | CLIP ``image_embeds`` |
| ``ip-adapter-plus`` | ``latents``, ``proj_in``, ``proj_out``, ``norm_out``, ``layers`` | CLIP penultimate states |
| ``insightedit-iaa`` | a ``mapper`` section + the ``ip-adapter`` keys | the LMM's ``[MM]`` hidden states |
| ``any2pix-global-local`` | the ``ip-adapter`` keys + ``raw_embed`` (InstructAny2Pix's SDXL ``ip_adapter_global_local_2_view``) | an embedding ``[n, C]`` (ImageBind space) |

Full-face, FaceID and FaceID-Plus files are recognised only to be refused with a clear message.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from ..weight_files import check_file, load_torch_file, open_safetensors

Sections = dict[str, dict[str, torch.Tensor]]

SECTIONS = ("image_proj", "ip_adapter", "mapper")
SECTION_ALIASES = {"adapter_modules": "ip_adapter"}  # tencent-ailab/IP-Adapter training checkpoints

IP_ADAPTER = "ip-adapter"
IP_ADAPTER_PLUS = "ip-adapter-plus"
INSIGHTEDIT_IAA = "insightedit-iaa"
ANY2PIX_GLOBAL_LOCAL = "any2pix-global-local"
FAMILIES = (IP_ADAPTER, IP_ADAPTER_PLUS, INSIGHTEDIT_IAA, ANY2PIX_GLOBAL_LOCAL)

EXPECTED_LAYOUT = (
    "an image adapter with sections image_proj.* and ip_adapter.<2n+1>.to_k_ip.weight / "
    "ip_adapter.<2n+1>.to_v_ip.weight (IP-Adapter: image_proj.proj.weight + image_proj.norm.*; "
    "IP-Adapter Plus: image_proj.latents + image_proj.proj_in/proj_out/norm_out/layers.*; "
    "InsightEdit IAA: mapper.<2i>.weight/bias in front of the IP-Adapter image_proj; InstructAny2Pix "
    "global-local: the IP-Adapter image_proj plus image_proj.raw_embed)"
)
BASIC_PROJ_KEYS = frozenset({"proj.weight", "proj.bias", "norm.weight", "norm.bias"})
GLOBAL_LOCAL_PROJ_KEYS = BASIC_PROJ_KEYS | {"raw_embed"}  # InstructAny2Pix ImageProjModel(num_crops=2)


def _key_sample(keys: list[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} keys: {shown}{more}" if keys else "no tensors"


def _split_flat(flat: dict[str, torch.Tensor]) -> tuple[Sections, list[str]]:
    sections: Sections = {}
    unknown: list[str] = []
    for key, tensor in flat.items():
        head, _, rest = key.partition(".")
        name = SECTION_ALIASES.get(head, head)
        if name in SECTIONS and rest:
            sections.setdefault(name, {})[rest] = tensor
        else:
            unknown.append(key)
    return sections, unknown


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with open_safetensors(path) as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def _read_torch(path: Path) -> object:
    return load_torch_file(
        path,
        expected_object="nested dicts of tensors loadable with torch.load(weights_only=True)",
        pickle_fix="re-save the adapter as {'image_proj': {...}, 'ip_adapter': {...}} or as .safetensors",
    )


def _nested_sections(path: Path, obj: object) -> tuple[Sections, list[str]]:
    if not isinstance(obj, dict):
        raise ModelFileError(path, EXPECTED_LAYOUT, f"an object of type {type(obj).__name__}", "use an adapter file")
    flat: dict[str, torch.Tensor] = {}
    sections: Sections = {}
    unknown: list[str] = []
    for key, value in obj.items():
        name = SECTION_ALIASES.get(key, key)
        if isinstance(value, dict) and name in SECTIONS:
            sections[name] = {k: t for k, t in value.items() if isinstance(t, torch.Tensor)}
        elif isinstance(value, torch.Tensor):
            flat[key] = value
        else:
            unknown.append(str(key))
    flat_sections, flat_unknown = _split_flat(flat)
    for name, tensors in flat_sections.items():
        sections.setdefault(name, {}).update(tensors)
    return sections, unknown + flat_unknown


def read_adapter_sections(path: str | Path) -> Sections:
    """``{"image_proj": {...}, "ip_adapter": {...}[, "mapper": {...}]}`` of an adapter file (CPU tensors).

    Raises ``ModelFileError`` for a missing, truncated or foreign file (one without an
    ``ip_adapter`` section of ``to_k_ip``/``to_v_ip`` weights).
    """
    path = check_file(path, "an adapter file")
    if path.suffix == ".safetensors":
        sections, unknown = _split_flat(_read_safetensors(path))
    else:
        sections, unknown = _nested_sections(path, _read_torch(path))
    layers = sections.get("ip_adapter", {})
    if not any(k.endswith(".to_k_ip.weight") for k in layers) or "image_proj" not in sections:
        found = {name: list(tensors) for name, tensors in sections.items()}
        found_text = "; ".join(f"{name}: {_key_sample(keys)}" for name, keys in found.items())
        if unknown:
            found_text = (found_text + "; " if found_text else "") + f"other entries: {_key_sample(unknown)}"
        raise ModelFileError(
            path,
            EXPECTED_LAYOUT,
            found_text or "an empty file",
            "pick an IP-Adapter (models/ipadapter) or InsightEdit IAA file; checkpoints, LoRAs and "
            "ControlNets go through their own loaders",
        )
    return sections


def recognise_adapter_family(sections: Sections, path: str | Path) -> str:
    """One of ``FAMILIES`` from the section keys, or ``ModelFileError`` naming what the file is."""
    image_proj = set(sections.get("image_proj", {}))
    has_lora = any("_lora." in k for k in sections.get("ip_adapter", {}))
    refused = None
    if "proj.3.weight" in image_proj:
        refused = "an IP-Adapter Full-face file (image_proj.proj.3.weight, 257 tokens)"
    elif any(k.startswith("perceiver_resampler.") for k in image_proj):
        refused = "an IP-Adapter FaceID-Plus file (image_proj.perceiver_resampler.*)"
    elif "proj.0.weight" in image_proj or has_lora:
        refused = "an IP-Adapter FaceID file (insightface embeddings, LoRA keys)"
    if refused is not None:
        raise ModelFileError(
            path,
            f"one of the families {', '.join(FAMILIES)}",
            refused,
            "use a base or Plus IP-Adapter (ip-adapter_sd15, ip-adapter-plus_sd15), or ComfyUI_IPAdapter_plus "
            "for FaceID and Full-face adapters",
        )
    if "mapper" in sections:
        if image_proj != BASIC_PROJ_KEYS:
            raise ModelFileError(
                path,
                "an InsightEdit IAA: mapper.* plus image_proj.proj.weight/bias and image_proj.norm.weight/bias",
                f"mapper keys with image_proj {_key_sample(list(image_proj))}",
                "save the IAA's Linear as image_proj.proj and its LayerNorm as image_proj.norm",
            )
        return INSIGHTEDIT_IAA
    if image_proj == BASIC_PROJ_KEYS:
        return IP_ADAPTER
    if image_proj == GLOBAL_LOCAL_PROJ_KEYS:
        return ANY2PIX_GLOBAL_LOCAL
    if {"latents", "proj_in.weight", "proj_out.weight", "norm_out.weight"} <= image_proj:
        return IP_ADAPTER_PLUS
    raise ModelFileError(
        path, EXPECTED_LAYOUT, f"image_proj {_key_sample(list(image_proj))}", "use an IP-Adapter or IAA file"
    )
