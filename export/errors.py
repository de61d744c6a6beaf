"""Typed errors of the export half; each message says what to do next."""

from __future__ import annotations

from types import ModuleType

from onedge.errors import OnedgeError


class ExportError(OnedgeError):
    """An export step failed (conversion, quantisation, a parity or accuracy gate)."""


class BackendNotInstalledError(ExportError):
    """A vendor library an export backend needs is not importable."""


class OnnxModelError(ExportError):
    """An ONNX file is missing, corrupt, or fails the ONNX checker."""


class ParityError(ExportError):
    """An artifact's outputs differ from the PyTorch student beyond the tolerance."""


class QdqError(ExportError):
    """A Q/DQ graph breaks the rules TensorRT's explicit quantisation needs."""


class EngineMismatchError(ExportError):
    """A TensorRT engine was built for another GPU or TensorRT version."""


def require(module: str, purpose: str, install: str) -> ModuleType:
    """Import ``module`` lazily, or raise :class:`BackendNotInstalledError` saying how."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendNotInstalledError(
            f"{purpose} needs the Python package {module!r}, which cannot be imported ({exc}); "
            f"install it with: {install}"
        ) from None
