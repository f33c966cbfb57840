"""Child process of tests/test_cuda_score_accum.py: runs PasaAttention on the CUDA EP for each
case in an .npz of inputs and writes the outputs to another .npz. The parent sets
PASA_ONNX_CUDA_SCORE_ACCUM, which the library reads once per process.

usage: python cuda_score_accum_child.py INPUTS.npz OUTPUTS.npz
"""

from __future__ import annotations

import json
import sys

import numpy as np
from cuda_support import run_pasa_cuda

from pasa_onnx.numerics import BFLOAT16


def main(src: str, dst: str) -> None:
    data = np.load(src, allow_pickle=False)
    meta = json.loads(str(data["cases"]))

    def array(key: str) -> np.ndarray:  # bfloat16 inputs come as their uint16 bits
        return data[key].view(BFLOAT16) if key in meta["bf16"] else data[key]

    outputs = {}
    for name, attrs in meta["attrs"].items():
        feeds = {k.split("/", 1)[1]: array(k) for k in data.files if k.startswith(name + "/")}
        y = run_pasa_cuda(feeds, **attrs)
        outputs[name] = y.view(np.uint16) if y.dtype == BFLOAT16 else y
    np.savez(dst, **outputs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
