"""``python -m pasa_onnx`` works like ``pasa-onnx``."""

import sys

from pasa_onnx.cli import main

sys.exit(main())
