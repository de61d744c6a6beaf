"""Typed errors of the targets package; each message says what to do about it."""

from __future__ import annotations

from onedge.errors import OnedgeError


class TargetError(OnedgeError):
    """A target could not validate the artifacts."""


class TargetUnreachableError(TargetError):
    """The board could not be reached, or the connection was lost, after the retries."""


class TargetAuthError(TargetError):
    """The board refused the key."""


class HostKeyError(TargetError):
    """The board's host key is unknown or changed and no pinned fingerprint matches it."""


class TargetTimeoutError(TargetError):
    """A command on the target ran past its timeout."""


class RemoteRootError(TargetError):
    """The board's remote_root belongs to another user or others may write to it."""


class MissingPythonError(TargetError):
    """The board has no usable Python interpreter."""


class MissingRuntimeError(TargetError):
    """The board lacks a library the runner needs (numpy or an inference runtime)."""


class UploadError(TargetError):
    """A file arrived on the board with another sha256 than it left with."""


class RunnerFailedError(TargetError):
    """The runner failed on the target while measuring an artifact."""


class EvalSetError(TargetError):
    """The eval set is missing or unreadable."""
