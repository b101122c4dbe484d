"""Command line of LMM Edit: ``python -m lmm_edit <command> ...``.

    edit               one edit through ComfyUI, headless (a self-check on tiny weights when real ones are absent)
    batch              a workflow over a manifest of edits, resumable, in process or on a Ray cluster (--metrics)
    locales            regenerate locales/en/nodeDefs.json from the node schemas (needs ComfyUI)
    convert-smartedit  SmartEdit release bundle -> compact per-component safetensors
    download           model files from the Hugging Face Hub into ComfyUI's model folders (--list: what and where)
    prepare-llava      LLaVA-1.1 from its delta weights and your LLaMA-1 folder, into models/lmm_edit/llava/
    doctor             for each example workflow, every model file it needs: present or missing, and how to get it
"""

from __future__ import annotations

import argparse
import sys


def _edit(argv: list[str]) -> int:
    from .cli.edit import main

    return main(argv)


def _batch(argv: list[str]) -> int:
    from .cli.batch.command import main

    return main(argv)


def _locales(argv: list[str]) -> int:
    import tempfile

    from .cli.comfy_session import ComfySession, find_comfyui
    from .cli.locales import write_node_defs

    parser = argparse.ArgumentParser(prog="python -m lmm_edit locales")
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        session = ComfySession(find_comfyui(args.comfyui), output_dir=work, input_dir=work, temp_dir=work,
                               models_dir=work)
        print(f"wrote {write_node_defs(session)}")
    return 0


def _convert_smartedit(argv: list[str]) -> int:
    from .loaders.errors import ModelFileError
    from .loaders.smartedit.convert import convert_smartedit

    parser = argparse.ArgumentParser(prog="python -m lmm_edit convert-smartedit",
                                     description="release SmartEdit bundle -> compact per-component safetensors; "
                                     "all or nothing: an existing output folder is replaced as a whole or kept")
    parser.add_argument("src", help="bundle folder (LLM-*, embeddings_qformer, modulate-*, unet-*)")
    parser.add_argument("dst", help="output folder (new, empty, or a previous conversion; not inside the source)")
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None, help="cast floating tensors")
    parser.add_argument("--clamp", action="store_true",
                        help="clip values beyond the range of --dtype (fp16: 65504) instead of refusing")
    parser.add_argument("--step", type=int, default=None, help="training step when the bundle holds several")
    args = parser.parse_args(argv)
    try:
        result = convert_smartedit(args.src, args.dst, args.dtype, args.step, clamp=args.clamp)
    except ModelFileError as err:
        print(f"convert-smartedit: {err}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note)
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


def _download(argv: list[str]) -> int:
    from .cli.download_command import main

    return main(argv)


def _prepare_llava(argv: list[str]) -> int:
    from .cli.prepare_llava_command import main

    return main(argv)


def _doctor(argv: list[str]) -> int:
    from .cli.doctor import main

    return main(argv)


COMMANDS = {"edit": _edit, "batch": _batch, "locales": _locales, "convert-smartedit": _convert_smartedit,
            "download": _download, "prepare-llava": _prepare_llava, "doctor": _doctor}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
