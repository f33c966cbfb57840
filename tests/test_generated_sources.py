"""Generated sources stay in step with their generators (a wrapper edited by hand, or a generator
changed without regenerating, would otherwise go unnoticed until a GPU build misbehaves)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wgmma_wrappers_match_their_generator():
    gen = _load(ROOT / "scripts" / "gen_wgmma.py")
    header = ROOT / "custom_ops" / "src" / "cuda" / "flash" / "wgmma_ops.cuh"
    assert header.read_text() == gen.render(), (
        f"{header} differs from scripts/gen_wgmma.py's output: run python scripts/gen_wgmma.py"
    )


def test_every_wrapper_names_each_accumulator_once():
    text = (ROOT / "custom_ops" / "src" / "cuda" / "flash" / "wgmma_ops.cuh").read_text()
    for n in (8, 64, 128):
        for kind in ("WgmmaSS", "WgmmaRS"):
            for ctype in ("__half", "__nv_bfloat16"):
                tail = ", 1>" if kind == "WgmmaRS" else ">"
                head = f"void {kind}<{n}, {ctype}{tail}"
                assert head in text, head
                body = text[text.index(head) :].split("\n}\n", 1)[0]
                outputs = [f'"+f"(d[{i}])' for i in range(n // 2)]
                assert all(body.count(o) == 1 for o in outputs), head
                assert f'"+f"(d[{n // 2}])' not in body, head
