"""Where the fixed cost of one attention node goes on the CUDA EP (run on the GPU machine).

For each case, PasaAttention, onnxruntime's Attention-23 and MultiHeadAttention in one-node
sessions with onnxruntime's profiler on: the median wall time of ``run_with_iobinding``, of the
profiler's ``model_run`` and of the node's ``*_kernel_time`` event. On the CUDA EP kernels run
asynchronously, so the node event is the host time of the node's Compute (launches included).

    PYTHONPATH=/tmp/ort-gpu PASA_ONNX_LIBRARY=... python3 scripts/device/node_host_time.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_cuda import Case, attn23_model, mha_model, pasa_model  # noqa: E402

CASES = [
    Case(12, 12, 64, 64, 64, False),
    Case(12, 12, 1024, 1024, 64, True),
    Case(32, 32, 1024, 1024, 128, True),
    Case(32, 32, 1, 4096, 128, False),
]


def _is_node(event: dict) -> bool:
    return event.get("cat") == "Node" and event["name"].endswith("_kernel_time")


def profile(model, feeds: dict[str, np.ndarray], custom_ops: bool, reps: int) -> dict[str, float]:
    import onnxruntime as ort

    import pasa_onnx

    opts = ort.SessionOptions()
    if custom_ops:
        opts = pasa_onnx.session_options(opts)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "prof")
    sess = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CUDAExecutionProvider"]
    )
    binding = sess.io_binding()
    keep = [ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for a in feeds.values()]
    for name, ov in zip(feeds, keep, strict=True):
        binding.bind_ortvalue_input(name, ov)
    for o in sess.get_outputs():
        binding.bind_output(o.name, "cuda", 0)
    walls = []
    for i in range(reps + 20):
        t0 = time.perf_counter()
        sess.run_with_iobinding(binding)
        if i >= 20:
            walls.append((time.perf_counter() - t0) * 1e6)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e["dur"] for e in events if e.get("name") == "model_run"][20:]
    nodes = [e["dur"] for e in events if _is_node(e)][20:]
    return {
        "wall_us": statistics.median(walls),
        "model_run_us": statistics.median(runs),
        "node_us": statistics.median(nodes),
    }


def main() -> None:
    import onnxruntime as ort

    ort.preload_dlls()
    rng = np.random.default_rng(0)
    for c in CASES:
        q = rng.standard_normal((1, c.heads, c.q_len, c.head_dim)).astype(np.float16)
        k = rng.standard_normal((1, c.kv, c.kv_len, c.head_dim)).astype(np.float16)
        v = rng.standard_normal((1, c.kv, c.kv_len, c.head_dim)).astype(np.float16)
        bhsd = {"Q": q, "K": k, "V": v}
        bsh = {
            n: np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(1, x.shape[2], -1)
            for n, x in bhsd.items()
        }
        for variant, model, feeds, custom in (
            ("pasa", pasa_model(c), bhsd, True),
            ("attn23", attn23_model(c), bhsd, False),
            ("mha", mha_model(c), bsh, False),
        ):
            r = profile(model, feeds, custom, reps=200)
            print(
                f"{c.name:36s} {variant:7s} wall {r['wall_us']:7.1f} us"
                f"  model_run {r['model_run_us']:7.1f}  node (host) {r['node_us']:6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
