"""SmartEdit's files: finding the four components in a bundle folder, and its LoRA settings.

Two layouts are accepted:
- release (TencentARC/SmartEdit-7B / -13B on the Hugging Face Hub, and the reference's `--total_dir`):
  `LLM-<step>/adapter_model.{bin,safetensors}` + `adapter_config.json` (in `LLM-<step>/` or the root,
  where the reference script expects it), `embeddings_qformer/checkpoint-<step>_embeddings_qformer.*`,
  `modulate-<step>/adapter_model.*`, `unet-<step>/adapter_model.*`;
- converted (`python -m lmm_edit convert-smartedit`): `llm.safetensors`, `embeddings_qformer.safetensors`,
  `bim.safetensors`, `unet.safetensors`, the LoRA settings in the metadata of `llm.safetensors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..errors import ModelFileError
from ..weight_files import check_folder, read_json, read_metadata
from ..weight_files import read_tensors as read_file_tensors

CONVERTED_FORMAT = "lmm_edit.smartedit.v1"  # value of the `format` metadata key of converted files
CONVERTED_NAMES = {
    "llm": "llm.safetensors",
    "embeddings_qformer": "embeddings_qformer.safetensors",
    "bim": "bim.safetensors",
    "unet": "unet.safetensors",
}
FileFormat = Literal["auto", "safetensors", "bin"]
RELEASE_OBJECT = "a plain dict of tensors loadable with torch.load(weights_only=True)"
RELEASE_PICKLE_FIX = "re-save it as a dict of tensors, or convert it with `python -m lmm_edit convert-smartedit`"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA of the SmartEdit LLM (data/adapter_config.json: r 8, alpha 16, q_proj/v_proj)."""

    r: int
    alpha: float
    target_modules: tuple[str, ...]
    source: str

    @property
    def scale(self) -> float:
        # peft LoraLayer: scaling = lora_alpha / r (no rslora in peft 0.4.0)
        return self.alpha / self.r


@dataclass(frozen=True)
class SmartEditBundle:
    """Paths of one SmartEdit bundle."""

    root: Path
    layout: Literal["release", "converted"]
    llm: Path
    embeddings_qformer: Path
    bim: Path
    unet: Path
    lora: LoraSettings


def _pick_file(folder: Path, stem: str, file_format: FileFormat) -> Path | None:
    order = {"auto": (".safetensors", ".bin"), "safetensors": (".safetensors",), "bin": (".bin",)}[file_format]
    for suffix in order:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _step_dirs(root: Path, prefix: str) -> dict[int, Path]:
    found = {}
    for entry in root.iterdir():
        match = re.fullmatch(re.escape(prefix) + r"(\d+)", entry.name)
        if match and entry.is_dir():
            found[int(match.group(1))] = entry
    return found


def _choose_step(root: Path, steps: dict[str, dict[int, Path]], step: int | None) -> int:
    llm_steps = sorted(steps["LLM-"])
    if step is not None:
        return step
    if len(llm_steps) == 1:
        return llm_steps[0]
    raise ModelFileError(
        root,
        "one training step per component (e.g. LLM-15000)",
        f"several: {', '.join(f'LLM-{s}' for s in llm_steps)}",
        "keep one step per bundle folder, or pass the step",
    )


ADAPTER_CONFIG_FIX = "copy data/adapter_config.json of github.com/TencentARC/SmartEdit next to the LLM folder"


def _lora_from_config(path: Path) -> LoraSettings:
    cfg = read_json(path, fix=ADAPTER_CONFIG_FIX)
    if cfg.get("peft_type", "LORA") != "LORA" or "r" not in cfg or "lora_alpha" not in cfg:
        raise ModelFileError(
            path,
            'a peft LoRA config ("peft_type": "LORA", "r", "lora_alpha", "target_modules")',
            f"keys {sorted(cfg)}",
            ADAPTER_CONFIG_FIX,
        )
    r, alpha, targets = cfg["r"], cfg["lora_alpha"], cfg.get("target_modules") or ()
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0 or isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ModelFileError(path, '"r" a positive integer and "lora_alpha" a number (SmartEdit: 8 and 16)',
                             f'"r": {r!r}, "lora_alpha": {alpha!r}', ADAPTER_CONFIG_FIX)
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
        raise ModelFileError(path, '"target_modules" a list of module names (SmartEdit: ["q_proj", "v_proj"])',
                             f'"target_modules": {targets!r}', ADAPTER_CONFIG_FIX)
    return LoraSettings(r, float(alpha), tuple(targets), str(path))


def _not_a_bundle(root: Path, why: str) -> ModelFileError:
    listing = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12] if root.is_dir() else []
    return ModelFileError(
        root,
        "a SmartEdit bundle folder holding LLM-<step>/, embeddings_qformer/, modulate-<step>/, unet-<step>/ "
        "(TencentARC/SmartEdit-7B or -13B as published) or the files of `convert-smartedit`",
        f"{why} (folder contents: {listing or 'nothing'})",
        "download the whole SmartEdit-7B/13B repository into one folder under models/lmm_edit/smartedit/",
    )


def _check_one_conversion(root: Path, paths: dict[str, Path], metas: dict[str, dict[str, str]]) -> None:
    """Every converted file must come from the same source and the same run of `convert-smartedit`."""
    for name, meta in metas.items():
        if meta.get("format") != CONVERTED_FORMAT or meta.get("component", name) != name:
            raise ModelFileError(
                paths[name], f'metadata "format": "{CONVERTED_FORMAT}", "component": "{name}"',
                f'"format": {meta.get("format")!r}, "component": {meta.get("component")!r}',
                "convert the release files again with `python -m lmm_edit convert-smartedit` into a new folder",
            )
    groups: dict[tuple, list[str]] = {}
    for name, meta in metas.items():
        groups.setdefault((meta.get("source"), meta.get("conversion")), []).append(paths[name].name)
    if len(groups) > 1:
        found = "; ".join(f"{', '.join(files)} from {src} (conversion {run})" for (src, run), files in groups.items())
        raise ModelFileError(
            root, "the four files of one conversion (same source and conversion in their metadata)",
            f"a mix: {found}", "convert the release bundle again into a new folder and use that folder",
        )


def _find_converted(root: Path) -> SmartEditBundle:
    paths = {name: root / file for name, file in CONVERTED_NAMES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise _not_a_bundle(root, f"converted files missing: {', '.join(missing)}")
    metas = {name: read_metadata(path) for name, path in paths.items()}
    _check_one_conversion(root, paths, metas)
    meta = metas["llm"]
    if "lora_r" not in meta:
        raise ModelFileError(
            paths["llm"],
            f'metadata "format": "{CONVERTED_FORMAT}" with the LoRA settings',
            f"metadata {sorted(meta)}",
            "convert the release files again with `python -m lmm_edit convert-smartedit`",
        )
    lora = LoraSettings(
        int(meta["lora_r"]), float(meta["lora_alpha"]), tuple(meta.get("lora_target_modules", "").split(",")),
        str(paths["llm"]),
    )
    return SmartEditBundle(root, "converted", paths["llm"], paths["embeddings_qformer"], paths["bim"], paths["unet"], lora)


def find_bundle(root: str | Path, step: int | None = None, file_format: FileFormat = "auto") -> SmartEditBundle:
    """Locate the components of the SmartEdit bundle at `root`; `file_format` picks `.bin` or `.safetensors`
    when both are present (auto: safetensors first)."""
    root = Path(root)
    if not root.is_dir():
        raise _not_a_bundle(root, "no folder at this path")
    check_folder(root, "a SmartEdit bundle folder", "download the SmartEdit repository into models/lmm_edit/smartedit/")
    if (root / CONVERTED_NAMES["llm"]).is_file():
        return _find_converted(root)
    steps = {p: _step_dirs(root, p) for p in ("LLM-", "modulate-", "unet-")}
    qformer_dir = root / "embeddings_qformer"
    if not any(steps.values()) and not qformer_dir.is_dir():
        raise _not_a_bundle(root, "none of LLM-<step>/, embeddings_qformer/, modulate-<step>/, unet-<step>/")
    if not steps["LLM-"]:
        raise _not_a_bundle(root, "no LLM-<step>/ folder")
    chosen = _choose_step(root, steps, step)
    found: dict[str, Path] = {}
    for prefix, name in (("LLM-", "llm"), ("modulate-", "bim"), ("unet-", "unet")):
        folder = steps[prefix].get(chosen)
        if folder is None:
            raise _not_a_bundle(root, f"no {prefix}{chosen}/ folder")
        weights = _pick_file(folder, "adapter_model", file_format)
        if weights is None:
            raise _not_a_bundle(folder, f"no adapter_model.{'bin or .safetensors' if file_format == 'auto' else file_format}")
        found[name] = weights
    qformer = _pick_file(qformer_dir, f"checkpoint-{chosen}_embeddings_qformer", file_format) if qformer_dir.is_dir() else None
    if qformer is None:
        raise _not_a_bundle(root, f"no embeddings_qformer/checkpoint-{chosen}_embeddings_qformer.bin")
    config = next((p for p in (found["llm"].parent / "adapter_config.json", root / "adapter_config.json") if p.is_file()), None)
    if config is None:
        raise ModelFileError(
            found["llm"].parent / "adapter_config.json",
            "the LoRA config adapter_config.json in the LLM folder or the bundle root",
            "no such file in either place",
            "copy data/adapter_config.json of github.com/TencentARC/SmartEdit into "
            f"{found['llm'].parent} (the reference script copies it there from the bundle root)",
        )
    return SmartEditBundle(root, "release", found["llm"], qformer, found["bim"], found["unet"], _lora_from_config(config))


def merge_lora(state: dict[str, torch.Tensor], lora: LoraSettings, path: Path) -> dict[str, torch.Tensor]:
    """Fold every `X.lora_A` / `X.lora_B` pair into `X.weight`: W + (alpha / r) * B @ A, computed in fp32.

    Works in place (each old weight is released as soon as its merged copy exists) and returns `state`.
    """
    for key in [k for k in state if k.endswith(".lora_A.weight")]:
        base = key[: -len(".lora_A.weight")]
        for needed in (base + ".lora_B.weight", base + ".weight"):
            if needed not in state:
                raise ModelFileError(path, f"{needed} next to {key}", "no such tensor", "download the LLM file again")
        a, b = state.pop(key).float(), state.pop(base + ".lora_B.weight").float()
        if a.shape[0] != lora.r:
            raise ModelFileError(
                path, f"LoRA rank r={lora.r} (from {lora.source})", f"{key} of shape {list(a.shape)}",
                "use the adapter_config.json that belongs to this LLM file",
            )
        weight = state[base + ".weight"]
        if a.dim() != 2 or b.dim() != 2 or (b.shape[0], a.shape[1]) != tuple(weight.shape) or b.shape[1] != a.shape[0]:
            raise ModelFileError(
                path, f"{base}.lora_B.weight [out, r] and .lora_A.weight [r, in] matching {base}.weight {list(weight.shape)}",
                f"lora_B {list(b.shape)}, lora_A {list(a.shape)}", "download the LLM file again",
            )
        state[base + ".weight"] = (weight.float() + lora.scale * (b @ a)).to(weight.dtype)
    return state


def read_tensors(path: str | Path, keep: Callable[[str], bool] | None = None,
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a SmartEdit file whose key passes ``keep``, each in its own storage (release `.bin` files
    are memory-mapped: see ``weight_files``)."""
    return read_file_tensors(path, keep, dtype, mmap=True, expected_object=RELEASE_OBJECT, pickle_fix=RELEASE_PICKLE_FIX)
