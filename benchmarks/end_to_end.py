"""End to end: a random-initialised fp16 BERT-base-sized or Llama-sized (GQA) model, exported by
torch, rewritten by pasa-onnx, both run in onnxruntime on the same inputs, interleaved.

    pip install '.[fixtures]'   # torch + transformers
    python benchmarks/end_to_end.py --model bert --seq 2048 --threads 2
    python benchmarks/end_to_end.py --model llama --layers 4 --seq 2048 --threads 16
    python benchmarks/end_to_end.py --model bert --provider cuda   # CUDA EP, outputs on the GPU

Prints the median time of each model (min-max), the speed-up (original / rewritten, per
repetition: median, min-max) and the max abs difference of the outputs. The two models run in a
shuffled order in each repetition, with thread pools that do not spin between runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(kind: str, layers: int, seq: int):
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "bert":  # BERT-base: hidden 768, 12 heads, 3072 FFN
        cfg = transformers.BertConfig(
            vocab_size=1000,
            hidden_size=768,
            num_hidden_layers=layers,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=max(512, seq),
            attn_implementation="eager",
        )
        model = transformers.BertModel(cfg)
    else:  # TinyLlama-1.1B layers: hidden 2048, 32 query / 4 kv heads, 5632 FFN
        cfg = transformers.LlamaConfig(
            vocab_size=1000,
            hidden_size=2048,
            num_hidden_layers=layers,
            num_attention_heads=32,
            num_key_value_heads=4,
            intermediate_size=5632,
            max_position_embeddings=max(2048, seq),
            attn_implementation="eager",
        )
        model = transformers.LlamaModel(cfg)
    return model.half().eval()


def export(model, seq: int, path: Path) -> None:
    import torch

    class HiddenStates(torch.nn.Module):  # the hidden states only, no KV cache object
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids, mask):
            return self.inner(input_ids=ids, attention_mask=mask).last_hidden_state

    ids = torch.randint(0, 1000, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    with torch.no_grad():  # as scripts/make_fixtures.py exports
        torch.onnx.export(
            HiddenStates(model),
            (ids, mask),
            str(path),
            dynamo=True,
            opset_version=18,
            external_data=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["bert", "llama"], default="bert")
    ap.add_argument("--layers", type=int, default=None, help="default: 12 (bert), 4 (llama)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--max-ir-version",
        type=int,
        default=None,
        help="lower the models' IR version to this (an older onnxruntime than the onnx here)",
    )
    args = ap.parse_args(argv)
    layers = args.layers or (12 if args.model == "bert" else 4)

    import onnxruntime as ort

    import pasa_onnx
    from pasa_onnx.rewriting import rewrite_file

    tmp = Path(tempfile.mkdtemp())
    original, rewritten = tmp / "model.onnx", tmp / "model.pasa.onnx"
    t0 = time.perf_counter()
    export(build(args.model, layers, args.seq), args.seq, original)
    print(f"exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    summary = rewrite_file(original, rewritten)
    if args.max_ir_version is not None:
        for path in (original, rewritten):
            _lower_ir(path, args.max_ir_version)
    print(summary.format())

    providers = ["CPUExecutionProvider"]
    if args.provider == "cuda":
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sessions = {
        "original": ort.InferenceSession(
            str(original), _threads(args.threads), providers=providers
        ),
        "rewritten": pasa_onnx.inference_session(
            str(rewritten), _threads(args.threads), providers=providers
        ),
    }
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 1000, (1, args.seq)),
        "attention_mask": np.ones((1, args.seq), np.int64),
    }
    outs = {k: s.run(None, feeds)[0] for k, s in sessions.items()}  # warm-up
    runners = {k: _runner(s, feeds, args.provider) for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    shuffle = random.Random(0).shuffle
    for _ in range(args.reps):
        shuffle(order)  # neither model always runs right after the other
        for name in order:
            t = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t)
    ratios = [o / r for o, r in zip(times["original"], times["rewritten"], strict=True)]
    diff = float(np.abs(outs["original"].astype(np.float64) - outs["rewritten"]).max())
    result = {
        "model": args.model,
        "layers": layers,
        "seq": args.seq,
        "threads": args.threads,
        "provider": args.provider,
        "replaced": summary.replaced,
        "found": summary.found,
        "original_ms": [1e3 * t for t in times["original"]],
        "rewritten_ms": [1e3 * t for t in times["rewritten"]],
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "max_abs_diff": diff,
    }
    for name in sessions:
        ms = result[f"{name}_ms"]
        print(f"{name:10} {statistics.median(ms):9.1f} ms  ({min(ms):.1f}-{max(ms):.1f})")
    print(
        f"speed-up (original / rewritten): {result['speedup_median']:.2f} "
        f"({result['speedup_min']:.2f}-{result['speedup_max']:.2f}); max |diff| {diff:.3g}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _lower_ir(path: Path, ir_version: int) -> None:
    import onnx

    model = onnx.load(str(path))
    if model.ir_version > ir_version:
        model.ir_version = ir_version
        onnx.save(model, str(path))


def _runner(session, feeds, provider: str):
    """One timed run: plain session.run on the CPU; on CUDA the outputs stay on the GPU
    (io_binding), so a large logits tensor is not copied back in every run."""
    if provider != "cuda":
        return lambda: session.run(None, feeds)
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", 0)
    return lambda: session.run_with_iobinding(binding)


def _threads(n: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    # The two sessions run alternately; a pool left spinning after its run would take cores from
    # the other's (see bench_attention.py).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


if __name__ == "__main__":
    sys.exit(main())
