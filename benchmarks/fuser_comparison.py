"""Attention instances found and replaced on the committed fixtures: pasa-onnx against
onnxruntime's transformers optimizer and onnxscript's ort_fusions, run on the same files.

    python benchmarks/fuser_comparison.py [--fixtures tests/fixtures] [--markdown]

"found" is pasa-onnx's count of attention subgraphs (Softmax between two MatMuls, or an
attention op node) in the original model. A fuser's count is the number of fused attention
nodes in its output (com.microsoft Attention / MultiHeadAttention / GroupQueryAttention / ...,
or PasaAttention); "runs" says whether onnxruntime still runs the output on the fixture's
inputs. Each fuser gets a fresh copy of the file; errors count as 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from fixtures.support import feeds  # noqa: E402

import pasa_onnx  # noqa: E402

FUSED = {
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "PackedAttention",
    "PackedMultiHeadAttention",
    "PasaAttention",
}
# onnxruntime optimizer model types by fixture prefix; the rest are tried as "bert".
ORT_MODEL_TYPES = {
    "gpt2": "gpt2",
    "t5": "t5",
    "bart": "bart",
    "vit": "vit",
    "clip": "clip",
    "diffusers": "unet",
}


def _fused(model: onnx.ModelProto) -> int:
    return sum(
        n.op_type in FUSED and n.domain in ("com.microsoft", "ai.pasa") for n in model.graph.node
    )


def _runs(model: onnx.ModelProto, inputs: dict, pasa: bool) -> bool:
    try:
        if pasa:
            sess = pasa_onnx.inference_session(model)
        else:
            sess = ort.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
        names = {i.name for i in sess.get_inputs()}
        outs = sess.run(None, {k: v for k, v in inputs.items() if k in names})
        return all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in outs)
    except Exception:
        return False


def ort_optimizer(path: Path, case: str) -> onnx.ModelProto | None:
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = next((t for p, t in ORT_MODEL_TYPES.items() if case.startswith(p)), "bert")
    best = None
    # levels 0-2 and 99 (onnxruntime's own C++ graph optimizations too); heads and hidden size
    # detected (0) or given (every fixture has 4 heads and hidden size 32): the best of all
    for level in (0, 1, 2, 99):
        for heads, hidden in ((0, 0), (4, 32)):
            try:
                out = optimize_model(
                    str(path),
                    model_type=model_type,
                    num_heads=heads,
                    hidden_size=hidden,
                    opt_level=level,
                    use_gpu=False,
                    only_onnxruntime=False,
                ).model
            except Exception:
                continue
            if best is None or _fused(out) > _fused(best):
                best = out
    return best


def ort_fusions(path: Path) -> onnx.ModelProto | None:
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    try:
        model, _ = optimize_for_ort(ir.load(path))
        return ir.to_proto(model)
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fixtures", type=Path, default=Path(__file__).parents[1] / "tests/fixtures"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--tools-only", action="store_true", help="only the tool outputs (tests/fixtures/tools)"
    )
    args = parser.parse_args(argv)
    manifest = json.loads((args.fixtures / "manifest.json").read_text())
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    if args.tools_only:
        return tool_outputs(args.fixtures / "tools")
    rows = []
    totals = dict(found=0, pasa=0, pasa_runs=0, ort=0, ort_runs=0, osx=0, osx_runs=0)
    header = f"{'fixture':34s} {'found':>5s} {'pasa':>5s} {'ORT opt':>8s} {'ort_fusions':>12s}"
    print(header)
    print("-" * len(header))
    for key, entry in manifest.items():
        path = args.fixtures / entry["file"]
        inputs = feeds(entry)
        t0 = time.perf_counter()
        rewritten, summary = pasa_onnx.rewrite(onnx.load(path))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            by_ort = ort_optimizer(path, entry["case"])
            by_osx = ort_fusions(path)
        row = dict(
            fixture=key,
            found=summary.found,
            pasa=summary.replaced,
            pasa_runs=_runs(rewritten, inputs, True),
            ort=_fused(by_ort) if by_ort is not None else 0,
            ort_runs=by_ort is not None and _runs(by_ort, inputs, False),
            osx=_fused(by_osx) if by_osx is not None else 0,
            osx_runs=by_osx is not None and _runs(by_osx, inputs, False),
        )
        rows.append(row)
        for k in totals:
            totals[k] += int(row[k])

        def cell(n, ok):
            return f"{n}{'' if ok or n == 0 else '!'}"

        print(
            f"{key:34s} {row['found']:5d} {cell(row['pasa'], row['pasa_runs']):>5s} "
            f"{cell(row['ort'], row['ort_runs']):>8s} {cell(row['osx'], row['osx_runs']):>12s}"
            f"   ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    print("-" * len(header))
    print(
        f"{'total (' + str(len(rows)) + ' files)':34s} {totals['found']:5d} {totals['pasa']:5d} "
        f"{totals['ort']:8d} {totals['osx']:12d}"
    )
    print(
        f"models that still run after the rewrite: pasa {totals['pasa_runs']}, "
        f"ORT optimizer {totals['ort_runs']}, ort_fusions {totals['osx_runs']} of {len(rows)}"
    )
    print("(! = the fused model does not run or gives non-finite outputs)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return tool_outputs(args.fixtures / "tools")


def _fused_all(model: onnx.ModelProto) -> int:
    """Fused attention nodes, subgraphs (If/Loop/Scan bodies) included."""

    def count(graph: onnx.GraphProto) -> int:
        n = 0
        for node in graph.node:
            n += node.op_type in FUSED and node.domain in ("com.microsoft", "ai.pasa")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    n += count(attr.g)
                n += sum(count(g) for g in attr.graphs)
        return n

    return count(model.graph)


def _tool_case(key: str) -> str:
    """The ORT optimizer model type's fixture prefix for a tool fixture key."""
    for prefix in ("optimum_", "ortopt_", "genai_", "transformers_"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def tool_outputs(folder: Path) -> int:
    """What users' tools write (scripts/make_tool_fixtures.py): per tool, the attention found,
    pasa-onnx's replacements, and the attention nodes onnxruntime's transformers optimizer and
    onnxscript's ort_fusions fuse beyond those the file already had (each on a fresh copy;
    errors count as 0); "matches" says whether every rewritten model matches its original on
    each recorded run (fp32 1e-4, fp16 1e-2 relative)."""
    from fixtures.support import max_rel_err, run_original, run_rewritten
    from test_rewrite_tools import tool_feeds

    tools = json.loads((folder / "tools.json").read_text())
    per_tool: dict[str, list[int]] = {}
    header = (
        f"{'tool output':34s} {'found':>5s} {'pasa':>5s} {'matches':>8s} {'had':>4s} "
        f"{'ORT opt':>8s} {'ort_fusions':>12s}"
    )
    print("\n" + header)
    for key, entry in sorted(tools.items()):
        path = folder / entry["file"]
        original = onnx.load(path)
        rewritten, summary = pasa_onnx.rewrite(original)
        ok = True
        for run in entry["runs"]:
            inputs = tool_feeds(original, run)
            try:
                pairs = [
                    (e, a)
                    for e, a in zip(
                        run_original(original, inputs),
                        run_rewritten(rewritten, inputs),
                        strict=True,
                    )
                    if e.size
                ]
                err = max_rel_err([e for e, _ in pairs], [a for _, a in pairs])
            except Exception:
                err = float("inf")
            ok &= err <= (1e-2 if entry["half"] else 1e-4)
        had = _fused_all(original)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            by_ort = ort_optimizer(path, _tool_case(key))
            by_osx = ort_fusions(path)
        ort_new = max(_fused_all(by_ort) - had, 0) if by_ort is not None else 0
        osx_new = max(_fused_all(by_osx) - had, 0) if by_osx is not None else 0
        counts = per_tool.setdefault(entry["tool"].split(" (")[0], [0] * 7)
        for i, n in enumerate((summary.found, summary.replaced, 1, int(ok), had, ort_new, osx_new)):
            counts[i] += n
        print(
            f"{key:34s} {summary.found:5d} {summary.replaced:5d} {'yes' if ok else 'NO':>8s} "
            f"{had:4d} {ort_new if by_ort is not None else 'err':>8} "
            f"{osx_new if by_osx is not None else 'err':>12}",
            flush=True,
        )
    print(
        f"\n{'tool':38s} {'files':>5s} {'found':>5s} {'pasa':>5s} {'match':>5s} {'had':>4s} "
        f"{'ORT opt':>8s} {'ort_fusions':>12s}"
    )
    for tool, (found, replaced, files, ok, had, ort_new, osx_new) in sorted(per_tool.items()):
        print(
            f"{tool:38s} {files:5d} {found:5d} {replaced:5d} {ok:5d} {had:4d} {ort_new:8d} "
            f"{osx_new:12d}"
        )
    print(
        "(had = fused attention nodes already in the file; ORT opt / ort_fusions = attention "
        "nodes they fuse beyond those; err = the tool failed on the file)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
