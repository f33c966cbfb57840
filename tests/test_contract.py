"""op_contract.json is the op's one interface description: the onnx schema is built from it,
and the kernel runs a node that spells out every default exactly like one that omits them."""

from __future__ import annotations

import json

import numpy as np
import onnx
from conftest import run_pasa

from pasa_onnx import contract


def test_contract_file_names_the_op():
    data = json.loads(contract.CONTRACT_PATH.read_text())
    assert (data["domain"], data["op"], data["version"]) == ("ai.pasa", "PasaAttention", 1)
    assert contract.INPUT_NAMES == (
        "Q",
        "K",
        "V",
        "attn_mask",
        "past_key",
        "past_value",
        "nonpad_kv_seqlen",
    )
    assert contract.OUTPUT_NAMES == ("Y", "present_key", "present_value")
    assert [p.optional for p in contract.INPUTS] == [False] * 3 + [True] * 4
    assert [p.optional for p in contract.OUTPUTS] == [False, True, True]
    # every attribute has a known type and a default of that type (None: derived)
    kinds = {"int": int, "float": float, "string": str}
    for a in contract.ATTRIBUTES:
        assert a.default is None or type(a.default) is kinds[a.type], a


def test_registered_schema_is_the_contract():
    schema = onnx.defs.get_schema(contract.OP_TYPE, contract.OP_VERSION, contract.DOMAIN)
    assert [p.name for p in schema.inputs] == list(contract.INPUT_NAMES)
    assert [p.name for p in schema.outputs] == list(contract.OUTPUT_NAMES)
    optional = onnx.defs.OpSchema.FormalParameterOption.Optional
    assert [p.option == optional for p in schema.inputs] == [p.optional for p in contract.INPUTS]
    assert sorted(schema.attributes) == sorted(a.name for a in contract.ATTRIBUTES)


def test_kernel_defaults_are_the_contract_defaults(rng):
    """Setting each attribute that has a default to that default changes no output bit."""
    q = (rng.standard_normal((1, 4, 70, 32)) + 2).astype(np.float16)
    k = (rng.standard_normal((1, 2, 150, 32)) + 2).astype(np.float16)
    v = rng.standard_normal((1, 2, 150, 32)).astype(np.float16)
    explicit = {a.name: a.default for a in contract.ATTRIBUTES if a.default is not None}
    assert {"is_causal", "softcap", "left_window_size", "block_kv"} <= set(explicit)
    plain = run_pasa({"Q": q, "K": k, "V": v})
    spelled = run_pasa({"Q": q, "K": k, "V": v}, **explicit)
    assert plain.tobytes() == spelled.tobytes()
