"""JSON report: ``ValidationResult.to_dict()`` with non-finite floats written as ``null``
(JSON has no inf/NaN)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pasa_onnx.results import ValidationResult


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def render(result: ValidationResult) -> str:
    return json.dumps(_clean(result.to_dict()), indent=2, allow_nan=False) + "\n"
