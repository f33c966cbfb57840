"""Device-only start-up hook (scripts/amx_device.sh puts this folder on PYTHONPATH).

The lent host's onnx writes IR 14 by default, which its onnxruntime (1.30, IR <= 13) rejects:
every model built through ``onnx.helper.make_model`` is clamped to IR 10, as the benchmarks'
own models are. Child processes (tests/test_isa_paths.py starts some) inherit it through
PYTHONPATH.
"""

try:
    import onnx
    import onnx.helper as _helper

    if onnx.IR_VERSION > 10 and not getattr(_helper, "_pasa_ir_clamped", False):
        _make_model = _helper.make_model

        def make_model(*args, **kwargs):
            model = _make_model(*args, **kwargs)
            model.ir_version = min(model.ir_version, 10)
            return model

        _helper.make_model = make_model
        _helper._pasa_ir_clamped = True
except ImportError:  # no onnx in this interpreter: nothing to clamp
    pass
