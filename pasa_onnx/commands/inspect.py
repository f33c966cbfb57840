"""``pasa-onnx inspect IN.onnx``: list the attention subgraphs a rewrite would replace, and the
ones it would leave alone (with the reason), without writing anything."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list what rewrite would replace, writing nothing",
        description="Find the attention subgraphs of a model and print, per instance, the "
        "pattern that would replace it or the reason it would be left alone.",
    )
    parser.add_argument("model", help="input ONNX model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pasa_onnx.rewriting import load, rewrite

    _, summary = rewrite(load(args.model))  # rewrites an in-memory copy only
    print(args.model)
    for inst in summary.instances:
        what = f"-> {inst.pattern}" if inst.replaced else f"left alone: {inst.reason}"
        print(f"  {inst.family:15s} {inst.anchor}  {what}")
    print(summary.format())
    return 0
