"""Method name -> the method's own config class, below both the config and the methods.

:func:`training.methods.base.register_method` fills :data:`METHOD_CONFIGS` when the methods are
imported (``import training.methods``); :mod:`training.config` resolves a ``method`` section's
class here, so it never imports the methods. Whoever parses a config imports the methods first:
``pipeline.config`` (the edge where run configs are loaded), ``training.checkpoint`` and the
trainer do.
"""

from __future__ import annotations

from typing import Any

from onedge.errors import RegistryError
from onedge.registry import Registry

METHOD_CONFIGS: Registry[type[Any]] = Registry("method")  # MethodConfig subclasses


def method_config(name: str) -> type[Any]:
    """The config class of the registered method ``name`` (unknown: RegistryError listing them)."""
    if not len(METHOD_CONFIGS):
        raise RegistryError(
            "no method is registered: import training.methods before validating a method section"
        )
    return METHOD_CONFIGS.get(name)
