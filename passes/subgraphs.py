"""The graphs of a model that hold attention: the main graph and, recursively, the bodies of
control-flow nodes (``If`` branches, ``Loop``/``Scan`` bodies). optimum's merged seq2seq
decoders put every decoder attention inside the two branches of one ``If``.

A subgraph is labelled by the path of nodes and attributes that leads to it, e.g.
``optimum::if/then_branch``; the main graph's label is ``""``. Values a body reads from an
enclosing scope are ordinary ``ir.Value`` references, so the rules rewrite inside a body
without touching them.
"""

from __future__ import annotations

import onnx_ir as ir


def graphs(graph: ir.Graph, label: str = "") -> list[tuple[str, ir.Graph]]:
    """``(label, graph)`` for ``graph`` and every subgraph below it, outer before inner."""
    found = [(label, graph)]
    for node in graph:
        for name, attr in node.attributes.items():
            if attr.type == ir.AttributeType.GRAPH:
                bodies = [(f"{node.name or node.op_type}/{name}", attr.value)]
            elif attr.type == ir.AttributeType.GRAPHS:
                bodies = [
                    (f"{node.name or node.op_type}/{name}[{i}]", g)
                    for i, g in enumerate(attr.value)
                ]
            else:
                continue
            for sub_label, body in bodies:
                found += graphs(body, f"{label}/{sub_label}" if label else sub_label)
    return found


def owner_label(node: ir.Node, labels: dict[int, str]) -> str:
    """The label of the graph that holds ``node`` (``labels`` maps ``id(graph)`` to label)."""
    return labels.get(id(node.graph), "")


def localize(model: ir.Model) -> list[ir.Node]:
    """Give every subgraph a local ``Identity`` copy of each enclosing-scope value its nodes read
    (initializers excepted: rules read those as constants), so that a pattern can match there:
    onnxscript's matcher refuses a node pattern, or a choice of patterns, on a value from
    another graph. :func:`restore` removes the copies again."""
    added: list[ir.Node] = []
    for label, graph in graphs(model.graph):
        if not label:
            continue
        local: dict[int, ir.Value] = {}
        first = next(iter(graph), None)
        for node in list(graph):
            for i, value in enumerate(node.inputs):
                if value is None or value.graph is graph or value.const_value is not None:
                    continue
                if id(value) not in local:
                    copy = ir.node("Identity", [value], name=f"{value.name}/pasa_local")
                    out = copy.outputs[0]
                    out.name = f"{value.name}/pasa_local{len(added)}"
                    out.shape, out.type = value.shape, value.type
                    if first is None:
                        graph.append(copy)
                    else:
                        graph.insert_before(first, copy)
                    local[id(value)] = out
                    added.append(copy)
                node.replace_input_with(i, local[id(value)])
    return added


def restore(added: list[ir.Node]) -> None:
    """Undo :func:`localize`: uses of each copy read the enclosing value again."""
    for copy in added:
        graph = copy.graph
        if graph is None:  # removed as unused
            continue
        source, out = copy.inputs[0], copy.outputs[0]
        for user, index in list(out.uses()):
            user.replace_input_with(index, source)
        graph.remove(copy, safe=True)
