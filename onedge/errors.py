"""Typed errors shared by every onedge package.

Each error carries a message a user can act on. The CLI prints it as one line and exits
non-zero; library callers catch the specific type.
"""

from __future__ import annotations


class OnedgeError(Exception):
    """Base of every error onedge raises on purpose."""


class ConfigError(OnedgeError):
    """A configuration file or override is invalid."""


class RegistryError(OnedgeError, KeyError):
    """An unknown or duplicate name in one of the registries."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (or its type name), for one-line errors."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
