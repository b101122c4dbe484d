"""The example workflows ``python -m lmm_edit edit`` runs: their model files and which inputs it sets.

Each ``ModelFile`` is what a loader node of the workflow names (category and file or folder), with where it
comes from; ``how_to_get`` (loaders/model_catalogue.py) gives the command that fetches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..loaders import model_folders


@dataclass(frozen=True)
class ModelFile:
    folder: str  # folder_paths category, e.g. "checkpoints"
    name: str  # file (relative to the category) or, for model folders, the folder name
    url: str
    is_folder: bool = False


@dataclass(frozen=True)
class EditJob:
    workflow: str
    needs: tuple[ModelFile, ...]
    instruction: tuple[str, str, str | None]  # (node type, input name, node title or None)
    default_instruction: str = "turn the sky into a sunset"
    audio: tuple[str, str] | None = None  # (node type, input name) the --audio file goes to; None: no audio input
    tiny: str = "ip2p"  # which tiny weights the self-check writes (cli/edit_self_check.py)
    steps: tuple[tuple[str, str], ...] = (("BasicScheduler", "steps"),)  # (node type, input) that --steps sets
    seeds: tuple[tuple[str, str], ...] = (("RandomNoise", "noise_seed"),)  # (node type, input) that --seed sets
    self_check_inputs: tuple[tuple[str, str, object], ...] = ()  # (node type, input, value) for tiny weights only


IP2P_CHECKPOINT = ModelFile(
    model_folders.CHECKPOINTS, "instruct-pix2pix-00-22000.safetensors",
    "https://huggingface.co/timbrooks/instruct-pix2pix/blob/main/instruct-pix2pix-00-22000.safetensors",
)
SDXL_CHECKPOINT = ModelFile(
    model_folders.CHECKPOINTS, "sd_xl_base_1.0.safetensors",
    "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/sd_xl_base_1.0.safetensors",
)
ANY2PIX_RELEASE = "instructany2pix_retrained"
ANY2PIX_HUB = "https://huggingface.co/jacklishufan/instructany2pix_retrained"
ANY2PIX_ADAPTER = "ip_adapter_global_local_2_view.bin"
JOBS = {
    "instructpix2pix": EditJob(
        workflow="instructpix2pix.json",
        needs=(IP2P_CHECKPOINT,),
        instruction=("CLIPTextEncode", "text", "Instruction"),
    ),
    "smartedit": EditJob(
        workflow="smartedit.json",
        needs=(
            ModelFile(model_folders.SMARTEDIT, "SmartEdit-7B", "https://huggingface.co/TencentARC/SmartEdit-7B "
                      "(the whole release folder; see README, SmartEdit files)", is_folder=True),
            ModelFile(model_folders.LLAVA, "LLaVA-7B-v1", "LLaVA-1.1 7B merged from liuhaotian/LLaVA-Lightning-7B-delta-v1-1 "
                      "onto LLaMA-1 7B, plus LLaMA's tokenizer.model (see README, Preparing LLaVA-1.1)", is_folder=True),
            ModelFile(model_folders.CLIP_VISION, "clip-vit-large-patch14/model.safetensors",
                      "https://huggingface.co/openai/clip-vit-large-patch14 (model.safetensors and config.json)"),
            IP2P_CHECKPOINT,
        ),
        instruction=("LMMEdit_LMMEncode", "instruction", None),
        tiny="smartedit",
    ),
    "any2pix": EditJob(
        workflow="any2pix.json",
        needs=(
            ModelFile(model_folders.ANY2PIX, ANY2PIX_RELEASE, f"{ANY2PIX_HUB} (llm-retrained/, prior/; see README, "
                      "InstructAny2Pix)", is_folder=True),
            ModelFile(model_folders.ANY2PIX, f"{ANY2PIX_RELEASE}/imagebind_huge.pth", "ckpts/imagebind_huge.pth of the "
                      "release, or https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth (facebookresearch/ImageBind)"),
            ModelFile(model_folders.IPADAPTER, ANY2PIX_ADAPTER, f"{ANY2PIX_HUB} (sdxl/{ANY2PIX_ADAPTER})"),
            SDXL_CHECKPOINT,
        ),
        instruction=("LMMEdit_Any2PixEncode", "instruction", None),
        default_instruction="add [audio1] to [image1]",
        audio=("LoadAudio", "audio"),
        tiny="any2pix",
        # the inversion walks the sampler's timesteps: both take the same step count
        steps=(("KSamplerAdvanced", "steps"), ("LMMEdit_Any2PixInvert", "steps")),
        seeds=(("LMMEdit_Any2PixEncode", "seed"), ("LMMEdit_Any2PixInvert", "seed")),
        # the tiny SDXL UNet has no down-sampling: 64 px (an 8 x 8 latent) instead of the reference's 1024
        self_check_inputs=(("LMMEdit_Any2PixInvert", "size", 64),),
    ),
}
