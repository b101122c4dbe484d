"""Command line of the pack: `python -m lmm_edit <command> ...`."""

from __future__ import annotations

import argparse
import sys


def _convert_smartedit(args: argparse.Namespace) -> int:
    from .loaders.smartedit.convert import convert_smartedit

    written = convert_smartedit(args.src, args.dst, args.dtype, args.step)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmm_edit")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert-smartedit", help="release SmartEdit bundle -> compact per-component safetensors"
    )
    convert.add_argument("src", help="bundle folder (LLM-*, embeddings_qformer, modulate-*, unet-*)")
    convert.add_argument("dst", help="output folder")
    convert.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None, help="cast floating tensors")
    convert.add_argument("--step", type=int, default=None, help="training step when the bundle holds several")
    convert.set_defaults(run=_convert_smartedit)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
