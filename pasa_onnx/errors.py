"""The project's one error type: a message that names the file, node or tensor at fault."""

from __future__ import annotations


class PasaError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits with 2."""


class ValidationFailed(PasaError):
    """A rewritten model differs from the original beyond the requested tolerance (exit 1)."""
