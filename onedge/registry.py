"""One small generic registry: name -> factory.

Used for models, methods, data sets, export formats and targets. Registering a name twice
or asking for an unknown one raises :class:`RegistryError` listing the known names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from onedge.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from names to factories (functions or classes)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("resnet20")``."""

        def decorate(factory: T) -> T:
            self.add(name, factory)
            return factory

        return decorate

    def add(self, name: str, factory: T) -> None:
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = factory

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
