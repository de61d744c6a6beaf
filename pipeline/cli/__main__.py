"""``python -m pipeline.cli``: the ``onedge`` command."""

from pipeline.cli import entry

entry()
