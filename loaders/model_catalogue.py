"""What ``python -m lmm_edit download <name>`` fetches: Hub repository, files, sizes, hashes, destination folders.

Plain data and lookups (no ComfyUI, no huggingface_hub import), shared by the download command, ``doctor``,
the ``properties.models`` entries of the example workflows and the loader nodes' hints for empty folders.

Destinations are ComfyUI ``folder_paths`` categories (``loaders/model_folders.py``) plus a path relative to
the category's first folder, so ``extra_model_paths.yaml`` moves them exactly as it moves ComfyUI's own.
``verified`` says how the repository and its file list were checked (the Hub's file pages or LFS pointers);
sizes and sha256 are only given where such a page showed them. Everything else is checked at download time
against the Hub's own listing (size, LFS sha256, git blob id).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import model_folders as mf

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class HubFile:
    repo_path: str  # path in the Hub repository
    category: str  # ComfyUI folder_paths category it goes to
    target: str  # path relative to that category's folder
    size: int | None = None  # bytes, where a Hub page showed the exact value
    sha256: str | None = None  # LFS sha256, where a Hub page showed it

    def url(self, repo_id: str, revision: str = "main") -> str:
        return f"{HUB}/{repo_id}/resolve/{revision}/{self.repo_path}"


@dataclass(frozen=True)
class HubFolder:
    """Every repository file under one of ``include`` (prefixes; "" = all), listed from the Hub at download time."""

    category: str
    target: str  # folder relative to the category's folder; repository paths keep their layout below it
    include: tuple[str, ...] = ("",)


@dataclass(frozen=True)
class Download:
    name: str
    repo_id: str
    what: str
    approx_size: str
    verified: str
    files: tuple[HubFile, ...] = ()
    folder: HubFolder | None = None
    revision: str = "main"

    def destinations(self) -> list[tuple[str, str]]:
        """(category, relative path) of what this download creates: each file, or the folder."""
        found = [(f.category, f.target) for f in self.files]
        if self.folder is not None:
            found.append((self.folder.category, self.folder.target))
        return found


IGNORED_REPO_FILES = (".gitattributes", "README.md")  # never copied by a folder download

SMARTEDIT_PARTS = ("LLM-15000/", "embeddings_qformer/", "modulate-15000/", "unet-15000/")
LLAVA_7B_DELTA_FILES = ("added_tokens.json", "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
                        "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "special_tokens_map.json",
                        "tokenizer.model", "tokenizer_config.json")
# instructany2pix/pipeline.py: ckpts/llm-retrained (and llm-instance), imagebind_huge.pth, prior/model.bin,
# sdxl/ip_adapter_global_local_2_view.bin; gdino/ (subject consistency) is not used by the pack.
ANY2PIX_PARTS = ("llm-retrained/", "llm-instance/", "imagebind_huge.pth", "prior/", "sdxl/")
LLAVA_7B_DELTA = "LLaVA-Lightning-7B-delta-v1-1"
LLAVA_13B_DELTA = "LLaVA-13b-delta-v1-1"

DOWNLOADS: dict[str, Download] = {d.name: d for d in (
    Download(
        "instructpix2pix", "timbrooks/instruct-pix2pix",
        "InstructPix2Pix checkpoint (also the VAE and CLIP-L text encoder of the SmartEdit workflows)", "7.7 GB",
        "file page huggingface.co/timbrooks/instruct-pix2pix (LFS sha256)",
        files=(HubFile("instruct-pix2pix-00-22000.safetensors", mf.CHECKPOINTS, "instruct-pix2pix-00-22000.safetensors",
                       sha256="fbc31a67aab29ad38eef622a252d3fa4b0a81d4a4dc65da416cf45b13aa67688"),),
    ),
    Download(
        "smartedit-7b", "TencentARC/SmartEdit-7B", "SmartEdit-7B release folders (LLM, Q-Former, BIM, UNet)", "about 22 GB",
        "tree page huggingface.co/TencentARC/SmartEdit-7B (four folders; LLM-15000/adapter_model.bin 17.8 GB)",
        folder=HubFolder(mf.SMARTEDIT, "SmartEdit-7B", SMARTEDIT_PARTS),
    ),
    Download(
        "smartedit-13b", "TencentARC/SmartEdit-13B", "SmartEdit-13B release folders (LLM, Q-Former, BIM, UNet)",
        "about 36 GB", "repository named by github.com/TencentARC/SmartEdit README; same layout as SmartEdit-7B assumed",
        folder=HubFolder(mf.SMARTEDIT, "SmartEdit-13B", SMARTEDIT_PARTS),
    ),
    Download(
        "clip-vit-l", "openai/clip-vit-large-patch14", "CLIP ViT-L/14, 224 px: SmartEdit's vision tower", "1.7 GB",
        "tree page of openai/clip-vit-large-patch14 copies (model.safetensors 1.71 GB, config.json)",
        files=(HubFile("model.safetensors", mf.CLIP_VISION, "clip-vit-large-patch14/model.safetensors"),
               HubFile("config.json", mf.CLIP_VISION, "clip-vit-large-patch14/config.json")),
    ),
    Download(
        "ip-adapter-sd15", "h94/IP-Adapter", "IP-Adapter SD1.5 and its CLIP ViT-H/14 image encoder", "2.6 GB",
        "h94/IP-Adapter models/ folder; image encoder LFS pointer (sha256, size) as copied by RyanJDick/ip_adapter_sd_image_encoder",
        files=(HubFile("models/ip-adapter_sd15.safetensors", mf.IPADAPTER, "ip-adapter_sd15.safetensors"),
               HubFile("models/image_encoder/model.safetensors", mf.CLIP_VISION,
                       "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", size=2528373448,
                       sha256="6ca9667da1ca9e0b0f75e46bb030f7e011f44f86cbfb8d5a36590fcd7507b030")),
    ),
    Download(
        "llava-7b-delta", f"liuhaotian/{LLAVA_7B_DELTA}", "LLaVA-1.1 7B delta weights: input of prepare-llava",
        "13.5 GB", "tree page huggingface.co/liuhaotian/LLaVA-Lightning-7B-delta-v1-1 (two .bin shards, 9.98 + 3.51 GB)",
        files=tuple(HubFile(name, mf.LLAVA_DELTA, f"{LLAVA_7B_DELTA}/{name}") for name in LLAVA_7B_DELTA_FILES),
    ),
    Download(
        "llava-13b-delta", f"liuhaotian/{LLAVA_13B_DELTA}", "LLaVA-1.1 13B delta weights: input of prepare-llava",
        "about 26 GB", "repository named by SmartEdit's README; file list read from the Hub at download time",
        folder=HubFolder(mf.LLAVA_DELTA, LLAVA_13B_DELTA),
    ),
    Download(
        "any2pix", "jacklishufan/instructany2pix_retrained",
        "InstructAny2Pix release (llm-retrained/, prior/, sdxl/ IP-Adapter) for the Any2Pix nodes", "about 15 GB",
        "repository named by github.com/jacklishufan/InstructAny2Pix readme.MD; the parts its instructany2pix/"
        "pipeline.py (@ d11e49b) loads from ckpts/; the Hub's file list itself not seen",
        folder=HubFolder(mf.ANY2PIX, "instructany2pix_retrained", ANY2PIX_PARTS),
    ),
    Download(
        "any2pix-adapter", "jacklishufan/instructany2pix_retrained",
        "InstructAny2Pix's SDXL IP-Adapter ip_adapter_global_local_2_view.bin, into models/ipadapter for the Image "
        "Adapter Loader", "about 0.7 GB (estimated from its shapes)",
        "path sdxl/ip_adapter_global_local_2_view.bin as instructany2pix/pipeline.py (@ d11e49b) loads it from ckpts/; "
        "the Hub's file list itself not seen",
        files=(HubFile("sdxl/ip_adapter_global_local_2_view.bin", mf.IPADAPTER, "ip_adapter_global_local_2_view.bin"),),
    ),
    Download(
        "sdxl-base", "stabilityai/stable-diffusion-xl-base-1.0", "SDXL base 1.0 single-file checkpoint (InstructAny2Pix's "
        "generator, through core Load Checkpoint)", "6.9 GB",
        "repository loaded by instructany2pix/pipeline.py (@ d11e49b) as diffusers folders; the single file is the "
        "one ComfyUI's SDXL examples use; size and hash checked against the Hub at download time",
        files=(HubFile("sd_xl_base_1.0.safetensors", mf.CHECKPOINTS, "sd_xl_base_1.0.safetensors"),),
    ),
)}

# What a folder needs before prepare-llava has run: the user's own LLaMA-1 weights are not on the Hub.
PREPARE_LLAVA = {
    "LLaVA-7B-v1": ("llava-7b-delta", LLAVA_7B_DELTA),
    "LLaVA-13B-v1": ("llava-13b-delta", LLAVA_13B_DELTA),
}


def download_command(name: str) -> str:
    return f"python -m lmm_edit download {name}"


def prepare_llava_command(target: str) -> str:
    delta_name, delta_folder = PREPARE_LLAVA.get(target, PREPARE_LLAVA["LLaVA-7B-v1"])
    return (f"{download_command(delta_name)}, then python -m lmm_edit prepare-llava --base <your LLaMA-1 folder> "
            f"--delta models/lmm_edit/llava_delta/{delta_folder}")


def find_download(category: str, name: str) -> Download | None:
    """The download that creates ``name`` (a file or folder as a loader widget shows it) in ``category``."""
    for download in DOWNLOADS.values():
        if (category, name) in download.destinations():
            return download
        folder = download.folder
        if folder is not None and folder.category == category and name.startswith(folder.target + "/"):
            part = name[len(folder.target) + 1:]
            if any(part == p.rstrip("/") or part.startswith(p) for p in folder.include):
                return download  # a part of a folder download (InstructAny2Pix's llm-retrained/, prior/, ...)
    return None


def how_to_get(category: str, name: str) -> str:
    """The command that puts ``name`` into ``category``, or what to do when no command can."""
    download = find_download(category, name)
    if download is not None:
        return download_command(download.name)
    if category == mf.LLAVA:
        return prepare_llava_command(name)
    return "no download known for this file: see the LMM Edit README, section 'Model files'"


def fetch_hint(category: str) -> str:
    """What the loader nodes show for an empty folder: the commands that fill it."""
    if category == mf.LLAVA:
        return "(empty: " + prepare_llava_command("LLaVA-7B-v1") + ")"
    names = [d.name for d in DOWNLOADS.values() if any(c == category for c, _ in d.destinations())]
    if not names:
        return f"(empty: put the files into the {category} folder, see the LMM Edit README)"
    return "(empty: " + " or ".join(download_command(n) for n in names) + ")"


@dataclass(frozen=True)
class LoaderWidget:
    """A loader node's widget that names a model file or folder (index in the UI workflow's widgets_values)."""

    node_type: str
    index: int
    category: str
    is_folder: bool


LOADER_WIDGETS = (
    LoaderWidget("CheckpointLoaderSimple", 0, mf.CHECKPOINTS, False),
    LoaderWidget("CLIPVisionLoader", 0, mf.CLIP_VISION, False),
    LoaderWidget("LMMEdit_SmartEditLoader", 0, mf.SMARTEDIT, True),
    LoaderWidget("LMMEdit_SmartEditLoader", 1, mf.LLAVA, True),
    LoaderWidget("LMMEdit_SmartEditLoader", 2, mf.CLIP_VISION, False),
    LoaderWidget("LMMEdit_AdapterLoader", 0, mf.IPADAPTER, False),
    LoaderWidget("LMMEdit_MLLMLoader", 0, mf.MLLM, True),
    LoaderWidget("LMMEdit_Any2PixLoader", 0, mf.ANY2PIX, True),
    LoaderWidget("LMMEdit_Any2PixLoader", 1, mf.ANY2PIX, False),
    LoaderWidget("LMMEdit_Any2PixLoader", 2, mf.ANY2PIX, True),
)
FRONTEND_SUFFIXES = (".safetensors", ".sft")  # the only files ComfyUI's missing-models dialog offers to download


def workflow_needs(workflow: dict) -> list[tuple[dict, LoaderWidget, str]]:
    """(node, widget, value) for every model file or folder a UI-format workflow's loader nodes name."""
    needs = []
    for node in workflow.get("nodes", []):
        values = node.get("widgets_values") or []
        for widget in LOADER_WIDGETS:
            if node.get("type") == widget.node_type and widget.index < len(values) and values[widget.index]:
                needs.append((node, widget, str(values[widget.index])))
    return needs


def frontend_models(node: dict) -> list[dict]:
    """``properties.models`` for a loader node: ``{name, url, directory}`` of each single file the catalogue can
    fetch. ComfyUI's frontend lists a model as missing when no file of that name is in ``directory``, and offers
    its download only for Hugging Face/Civitai URLs of ``.safetensors``/``.sft`` files; folders (a SmartEdit
    bundle) cannot be described this way and are left to ``doctor``."""
    models = []
    for _, widget, value in workflow_needs({"nodes": [node]}):
        download = find_download(widget.category, value)
        if widget.is_folder or download is None or not value.endswith(FRONTEND_SUFFIXES):
            continue
        hub_file = next(f for f in download.files if (f.category, f.target) == (widget.category, value))
        models.append({"name": value, "url": hub_file.url(download.repo_id, download.revision),
                       "directory": widget.category})
    return models
