"""LMMEdit_Any2PixLoader: InstructAny2Pix's LLM folder, ImageBind file and prior folder -> LMM_EDIT_ANY2PIX.

The work is in loaders/any2pix (pure torch). Here: the pickers over models/lmm_edit/any2pix/ (the release
folder as jacklishufan/instructany2pix_retrained ships it: `<release>/llm-retrained/`, `<release>/
imagebind_huge.pth`, `<release>/prior/model.bin`), the dtype policy, ComfyUI's layers (`operations=`), and
each model as a ModelPatcher on the text-encoder device, so ComfyUI loads it before use and offloads it for
the UNet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import comfy.model_patcher
import comfy.ops
import folder_paths
import torch
from comfy_api.v0_0_2 import io

from ..loaders import model_folders
from ..loaders.any2pix import Any2PixTokenizer, load_imagebind, load_llm, load_prior, read_generation_config
from ..loaders.any2pix.llm_files import SINGLE_FILES as LLM_WEIGHT_FILES
from ..loaders.model_catalogue import download_command, fetch_hint
from ..loaders.storage import STORAGE_CHOICES, storage_dtype, store_weights
from .module_patchers import (
    DTYPE_CHOICES,
    WEIGHT_DTYPE_TOOLTIP,
    explicit_dtype,
    lmm_load_device,
    lmm_operations,
    resolve_dtype,
    wrap_module,
)
from .socket_types import ANY2PIX

RELEASE_DOWNLOAD = "any2pix"  # loaders/model_catalogue.py DOWNLOADS
PRIOR_FILES = ("model.bin", "model.safetensors")  # instructany2pix/pipeline.py: ckpt/prior/model.bin
IMAGEBIND_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# optional configs next to the prior weights (the reference loads them by Hub id; defaults: gpt2-medium's 16 heads,
# the laion CLIP ViT-H/14 text tower's head width 64) and the CLIP tokenizer files naming BOS/EOS
PRIOR_GPT2_CONFIG, PRIOR_CLIP_CONFIG = "gpt2_config.json", "clip_config.json"


@dataclass
class Any2PixModels:
    """What LMM_EDIT_ANY2PIX carries: three ModelPatchers and what the encode/fuse nodes need besides them."""

    llm: comfy.model_patcher.ModelPatcher  # loaders.any2pix.Any2PixLLM
    imagebind: comfy.model_patcher.ModelPatcher  # loaders.any2pix.ImageBind
    prior: comfy.model_patcher.ModelPatcher  # loaders.any2pix.Any2PixPrior
    tokenizer: Any2PixTokenizer
    generation_config: dict
    prior_text_ids: list[int]  # CLIP ids of "" (BOS, EOS)
    llm_folder: str


def _walk(depth: int = 2):
    """(relative name, absolute path, is_dir) of every entry up to `depth` levels under the any2pix folders."""
    for root in folder_paths.get_folder_paths(model_folders.ANY2PIX):
        if not os.path.isdir(root):
            continue
        for current, dirs, files in os.walk(root):
            rel = os.path.relpath(current, root)
            level = 0 if rel == "." else rel.count(os.sep) + 1
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if level < depth else []
            for name in dirs:
                yield os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/"), os.path.join(current, name), True
            for name in files:
                yield os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/"), os.path.join(current, name), False


def _options(kind: str) -> list[str]:
    found = sorted({name for name, path, is_dir in _walk() if _is_kind(kind, path, is_dir)})
    return found or [fetch_hint(model_folders.ANY2PIX)]


def _is_kind(kind: str, path: str, is_dir: bool) -> bool:
    if kind == "llm":
        return is_dir and os.path.isfile(os.path.join(path, "config.json")) and \
            any(os.path.exists(os.path.join(path, f)) for f in LLM_WEIGHT_FILES + ("model.safetensors.index.json",
                                                                                   "pytorch_model.bin.index.json"))
    if kind == "prior":
        return is_dir and not os.path.isfile(os.path.join(path, "config.json")) and \
            any(os.path.isfile(os.path.join(path, f)) for f in PRIOR_FILES)
    name = os.path.basename(path).lower()
    return not is_dir and "imagebind" in name and name.endswith(IMAGEBIND_SUFFIXES)


def resolve(kind: str, name: str) -> Path:
    """Full path of a picked LLM folder / ImageBind file / prior folder; a clear error names where we looked."""
    for root in folder_paths.get_folder_paths(model_folders.ANY2PIX):
        candidate = os.path.join(root, name)
        if name and not name.startswith("(") and os.path.exists(candidate) and _is_kind(kind, candidate, os.path.isdir(candidate)):
            return Path(candidate)
    what = {"llm": "LLM folder (config.json + weights + tokenizer/)", "prior": "prior folder (model.bin)",
            "imagebind": "ImageBind file (imagebind_huge.pth)"}[kind]
    raise FileNotFoundError(
        f"InstructAny2Pix {what} '{name}' not found in {folder_paths.get_folder_paths(model_folders.ANY2PIX)}. "
        f"Get it with: {download_command(RELEASE_DOWNLOAD)} (the whole release folder), then press R in ComfyUI to "
        "refresh the lists."
    )


def load_any2pix(llm_dir: Path, imagebind_file: Path, prior_dir: Path, dtype: str,
                 weight_dtype: str = "default") -> Any2PixModels:
    device = lmm_load_device()
    compute = resolve_dtype(dtype, device)
    ops = comfy.ops.disable_weight_init  # ComfyUI's layers, as its own models use (loaders/operations.py)
    storage = storage_dtype(weight_dtype, compute)
    llm_ops = lmm_operations(storage, compute)
    llm, tokenizer = load_llm(llm_dir, compute, operations=llm_ops)
    store_weights(llm.llm, storage, compute, llm_ops)  # the LLaMA decoder: all but a few MB of the LLM
    imagebind = load_imagebind(imagebind_file, dtype=compute, operations=ops)
    prior_weights = next(prior_dir / f for f in PRIOR_FILES if (prior_dir / f).is_file())
    gpt2, clip = prior_dir / PRIOR_GPT2_CONFIG, prior_dir / PRIOR_CLIP_CONFIG
    bundle = load_prior(
        prior_weights, gpt2 if gpt2.is_file() else None, clip if clip.is_file() else None,
        prior_dir if (prior_dir / "vocab.json").is_file() else None,
        dtype=explicit_dtype(dtype) or torch.float32,  # the reference runs the prior in fp32 (CFG x10 amplifies)
        operations=ops,
    )
    return Any2PixModels(
        llm=wrap_module(llm, device), imagebind=wrap_module(imagebind, device), prior=wrap_module(bundle.prior, device),
        tokenizer=tokenizer, generation_config=read_generation_config(llm_dir), prior_text_ids=bundle.empty_text_ids,
        llm_folder=str(llm_dir),
    )


class Any2PixLoaderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_Any2PixLoader",
            display_name="InstructAny2Pix Loader",
            category="lmm_edit/loaders",
            description="Loads InstructAny2Pix (arXiv 2312.06738) from its release files: the LLaMA-2 LLM with its "
            "projector, output head and tokenizer, ImageBind-huge's vision and audio encoders, and the refinement "
            "prior. SDXL and the two-view IP-Adapter are loaded by core / LMM Edit adapter nodes.",
            inputs=[
                io.Combo.Input("llm", options=_options("llm"),
                               tooltip="The LLM folder in models/lmm_edit/any2pix/, e.g. instructany2pix_retrained/"
                               "llm-retrained (config.json with model_type instructany2pix, the weights, tokenizer/)."),
                io.Combo.Input("imagebind", options=_options("imagebind"),
                               tooltip="ImageBind-huge's imagebind_huge.pth (dl.fbaipublicfiles.com/imagebind) in "
                               "models/lmm_edit/any2pix/ (any sub-folder; the name must contain 'imagebind'). Only "
                               "the vision and audio tensors are read."),
                io.Combo.Input("prior", options=_options("prior"),
                               tooltip="The prior folder holding model.bin (or model.safetensors), e.g. "
                               "instructany2pix_retrained/prior. Optional gpt2_config.json / clip_config.json next "
                               "to it override gpt2-medium's and the laion CLIP text tower's head counts."),
                io.Combo.Input("dtype", options=list(DTYPE_CHOICES), default="auto",
                               tooltip="LLM and ImageBind dtype. auto: fp16 (else bf16) on a GPU, fp32 on CPU. The "
                               "reference runs the LLM in 4-bit (bitsandbytes) and ImageBind and the prior in fp32 "
                               "on CPU; the prior stays fp32 here unless a dtype is picked. 7B LLM in fp16: ~14 GB."),
                io.Combo.Input("weight_dtype", options=list(STORAGE_CHOICES), default="default", optional=True,
                               tooltip=WEIGHT_DTYPE_TOOLTIP + " Applies to the LLM's LLaMA decoder: about 13.5 GB of "
                               "weights in fp16, 7 GB in fp8."),
            ],
            outputs=[ANY2PIX.Output(display_name="ANY2PIX", tooltip="LLM + ImageBind + prior, for "
                                    "LMMEdit_Any2PixEncode and LMMEdit_Any2PixFuse.")],
        )

    @classmethod
    def execute(cls, llm, imagebind, prior, dtype, weight_dtype="default") -> io.NodeOutput:
        return io.NodeOutput(load_any2pix(
            resolve("llm", llm), resolve("imagebind", imagebind), resolve("prior", prior), dtype, weight_dtype))


NODES = [Any2PixLoaderNode]
