"""Graph passes that replace attention subgraphs with ``ai.pasa::PasaAttention``.

One module per pattern family (``primitive``, ``onnx_attention``, ``ort_contrib``), each
normalising a match into :class:`~pasa_onnx.passes.match.AttentionMatch`; ``emit`` builds the
node; ``layout`` refines 4-D nodes into the 3-D layout; ``pipeline`` runs them all and accounts
for every instance. Shipped as ``pasa_onnx.passes``.
"""
