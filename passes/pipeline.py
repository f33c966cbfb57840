"""Run every family on an onnx_ir model, then the refinements, and account for each attention
instance: replaced (by which pattern) or left alone (and why)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import onnx_ir as ir
import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer
from onnxscript.rewriter import pattern

from pasa_onnx.contract import DOMAIN, OP_TYPE, PATTERN_KEY, REPLACED_KEY, UPCAST_KEY

from . import layout, onnx_attention, ort_contrib, primitive, shapes, subgraphs
from .match import OTHER_VARIANT


class Family(Protocol):
    """What a pattern-family module exposes (see passes/primitive.py for one)."""

    FAMILY: str  # its name in summaries and reports
    rules: list  # its onnxscript rewrite rules

    def find(self, node: ir.Node) -> ir.Node | None:
        """The root node of the instance of this family that ``node`` anchors, else None."""
        ...

    def diagnose(self, anchor: ir.Node, root: ir.Node) -> str:
        """Why no rule replaced this instance, when the family can tell ("" otherwise)."""
        ...


# The registry: families in the order they run. A new pattern family is one module in passes/
# and one entry here.
FAMILIES: tuple[Family, ...] = (primitive, onnx_attention, ort_contrib)
REFINEMENTS: list = layout.rules  # run after every family: they improve emitted nodes
MIN_OPSET = 13

# Matcher messages and what they mean for attention.
# How onnxscript's matcher words its own failures (not meant for users).
_MATCHER_TEXT = (
    "Mismatch:",
    "None of the alternatives matched",
    "OpType mismatch",
    "Value ",
    "Attribute ",
    "Domain mismatch",
    "Number of ",
    "Constant ",
    "Node ",
)

_FRIENDLY = {
    "Matched nodes have other uses preventing replacement.": (
        "an intermediate of the attention (scores or probabilities) is used elsewhere"
    ),
}


@dataclass
class Instance:
    """One attention subgraph found in the model."""

    family: str
    anchor: str  # name of the Softmax or attention op node
    replaced: bool
    pattern: str = ""  # the family/variant that replaced it
    reason: str = ""  # why it was left alone
    node: str = ""  # the PasaAttention node that replaced it
    graph: str = ""  # the subgraph that holds it (e.g. "If_0/then_branch"); "" = main graph


def find_instances(graph: ir.Graph) -> list[tuple[str, ir.Node, ir.Node]]:
    """(family, anchor, root) for each attention subgraph: Softmax between two MatMuls (root =
    the value MatMul) or an attention op node (root = the node)."""
    found = []
    for node in graph:
        for family in FAMILIES:
            root = family.find(node)
            if root is not None:
                found.append((family.FAMILY, node, root))
                break
    return found


def _diagnose(model: ir.Model, family: str, anchor: ir.Node, root: ir.Node) -> str:
    """Why the family's rules did not replace this instance."""
    module = next(f for f in FAMILIES if family == f.FAMILY)
    specific = module.diagnose(anchor, root)
    if specific:
        return specific
    rules = module.rules
    reasons = []
    for rule in rules:
        tracer = pattern.MatchingTracer()
        rule.match(model, root.graph or model.graph, root, tracer=tracer)
        for infos in tracer.best_matches_map.values():
            for info in infos[:1]:
                if info.match_result.reason != OTHER_VARIANT:
                    reasons.append((info.score(), info.match_result.reason))
    if not reasons:
        return "no rule of the family matched its structure"
    reason = max(reasons)[1] or "no rule of the family matched its structure"
    if reason.startswith(_MATCHER_TEXT):  # the matcher's own words, not a rule's reason
        return "no rule of the family matched its structure"
    return _FRIENDLY.get(reason, reason)


def _name_upcast_outputs(graph: ir.Graph) -> None:
    """Where the op's Y feeds an fp32 Cast standing in for an upcast original output, give Y the
    original tensor's name (naming contract) unless that name is a graph output."""
    for node in graph:
        of = node.metadata_props.get(UPCAST_KEY)
        if not of or node.outputs[0].is_graph_output():
            continue
        y = node.inputs[0]
        if y is None:
            continue
        y.name, node.outputs[0].name = node.outputs[0].name, f"{node.outputs[0].name}/pasa_cast"
        del node.metadata_props[UPCAST_KEY]


def _pasa_nodes(graph: ir.Graph) -> Iterable[ir.Node]:
    """Every PasaAttention node, subgraphs included."""
    nodes = ir.traversal.RecursiveGraphIterator(graph)
    return (n for n in nodes if n.domain == DOMAIN and n.op_type == OP_TYPE)


def run(model: ir.Model, progress: Callable[[str], None] | None = None) -> list[Instance]:
    """Rewrite ``model`` in place; return every attention instance found and its fate.
    ``progress`` gets a line per stage (the CLI prints them to stderr)."""
    declared = [(v, v.shape, v.type) for v in [*model.graph.inputs, *model.graph.outputs]]
    ir_passes.NameFixPass()(model)  # every node named: the summary refers to them by name
    shapes.infer(model)
    already = {n.name for n in _pasa_nodes(model.graph)}
    labels = {id(g): label for label, g in subgraphs.graphs(model.graph)}
    instances = [found for _, g in subgraphs.graphs(model.graph) for found in find_instances(g)]
    where = {id(a): subgraphs.owner_label(a, labels) for _, a, _ in instances}
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if opset < MIN_OPSET:  # the emitted helpers (Unsqueeze/Split with axes inputs) need 13
        reason = f"the model's opset {opset} is below {MIN_OPSET}; upgrade it first"
        return [
            Instance(f, a.name or "", False, reason=reason, graph=where[id(a)])
            for f, a, _ in instances
        ]
    local = subgraphs.localize(model)  # undone below, once every instance is accounted for
    if progress:
        progress(f"{len(instances)} attention subgraphs found")
    for fam in FAMILIES:
        count = pattern.RewriteRuleSet(fam.rules).apply_to_model(model)
        if progress:
            progress(f"family {fam.FAMILY}: {count} replaced")
    count = pattern.RewriteRuleSet(REFINEMENTS).apply_to_model(model)
    if progress:
        progress(f"3-D layout: {count} head splits absorbed")
    onnxscript.optimizer.remove_unused_nodes(model)
    for _, g in subgraphs.graphs(model.graph):
        _name_upcast_outputs(g)
    for value, shape, type_ in declared:  # the interface stays as declared (dynamic dims too)
        value.shape, value.type = shape, type_

    # Map each anchor to the new node whose replaced list names it.
    by_replaced: dict[str, ir.Node] = {}
    for node in _pasa_nodes(model.graph):
        if node.name in already:
            continue
        for name in node.metadata_props.get(REPLACED_KEY, "").split(","):
            by_replaced[name] = node
    report = []
    for family, anchor, root in instances:
        new = by_replaced.get(anchor.name or "")
        if anchor.graph is None and new is not None:
            report.append(
                Instance(
                    family,
                    anchor.name or "",
                    True,
                    pattern=new.metadata_props.get(PATTERN_KEY, family),
                    node=new.name or "",
                    graph=where[id(anchor)],
                )
            )
        else:
            reason = _diagnose(model, family, anchor, root)
            report.append(
                Instance(family, anchor.name or "", False, reason=reason, graph=where[id(anchor)])
            )
    subgraphs.restore(local)
    return report
