"""Training methods registry: name -> factory(MethodConfig) -> Method.

A method decides which network is trained (one multi-branch model, or independent peers) and the
loss on its outputs. Adding a method is one registered class; tests parametrise over the registry.
"""

from __future__ import annotations

from training.methods import classic as _classic  # noqa: F401  (registers the methods)
from training.methods import compact as _compact  # noqa: F401
from training.methods import distill as _distill  # noqa: F401
from training.methods import meal as _meal  # noqa: F401
from training.methods import srm as _srm  # noqa: F401
from training.methods import student_ensemble as _student_ensemble  # noqa: F401
from training.methods.base import METHODS, Method, TrainedModules, build_method

__all__ = ["METHODS", "Method", "TrainedModules", "build_method"]
