"""The contracts shared by the op, the rewriter and validation, each written once.

The op's interface (domain, name, version, inputs, outputs, attributes and their defaults) is
``op_contract.json`` next to this file: the onnx schema (:mod:`pasa_onnx.schema`) is built from
it and the C++ library's build generates its header from the same file. The metadata keys are
what the rewriter writes on the nodes it emits and what validation reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTRACT_PATH = Path(__file__).resolve().parent / "op_contract.json"


@dataclass(frozen=True)
class Param:
    """An input or output of the op."""

    name: str
    optional: bool
    type: str  # a type-constraint name ("T", "U") or a fixed type ("tensor(int64)")
    doc: str


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str  # "int" | "float" | "string"
    default: Any  # None: absent means "derived" (e.g. scale = 1/sqrt(D))
    doc: str


def _load() -> dict[str, Any]:
    with open(CONTRACT_PATH, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


_CONTRACT = _load()

DOMAIN: str = _CONTRACT["domain"]
OP_TYPE: str = _CONTRACT["op"]
OP_VERSION: int = _CONTRACT["version"]
OP_DOC: str = _CONTRACT["doc"]
INPUTS: tuple[Param, ...] = tuple(Param(**p) for p in _CONTRACT["inputs"])
OUTPUTS: tuple[Param, ...] = tuple(Param(**p) for p in _CONTRACT["outputs"])
ATTRIBUTES: tuple[Attribute, ...] = tuple(Attribute(**a) for a in _CONTRACT["attributes"])
# (name, allowed types, doc) for each type constraint of the inputs and outputs
TYPE_CONSTRAINTS: tuple[tuple[str, list[str], str], ...] = tuple(
    (c["name"], list(c["types"]), c["doc"]) for c in _CONTRACT["type_constraints"]
)
INPUT_NAMES: tuple[str, ...] = tuple(p.name for p in INPUTS)
OUTPUT_NAMES: tuple[str, ...] = tuple(p.name for p in OUTPUTS)
# Attribute values a node without that attribute runs with (None: derived by the kernel).
ATTRIBUTE_DEFAULTS: dict[str, Any] = {a.name: a.default for a in ATTRIBUTES}

# Node metadata the rewriter writes (passes/emit.py) and validation reads (exposure.py).
PATTERN_KEY = "pasa.pattern"  # the family/variant that produced the node
REPLACED_KEY = "pasa.replaced"  # comma-separated names of the original nodes it replaced
UPCAST_KEY = "pasa.upcast_of"  # on the Cast after Y; the pipeline moves the name onto Y
EMITTED_KEY = "pasa.emitted"  # on helper nodes we add: a refinement never reports them replaced
