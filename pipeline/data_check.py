"""The image-folder check of a run: first step of ``onedge run``, before any training.

It writes ``DIR/data-check.json`` (images per class and split, size and mode histograms, bad
and skipped files, classes missing from a split, duplicates across splits: the numbers of
:class:`training.image_check.DataCheck`), prints the tables, and stops the run with one line on
what :func:`training.image_check.enforce` refuses. The decoded images it builds go to
``data.cache_dir`` (``DIR/data-cache`` unless set), where training and export read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onedge.files import atomic_write
from training.data.folder import prepare_folder
from training.image_check import enforce, print_check

DATA_CHECK_FILE = "data-check.json"
DATA_CACHE_DIR = "data-cache"
FOLDER_DATA_SETS = ("imagefolder",)


def with_run_cache(config: Any, root: Path) -> Any:
    """``config`` with ``data.cache_dir`` set to ``root/data-cache`` for an image folder left
    without one (any model with a ``data`` section: RunConfig, TrainingConfig)."""
    data = config.data
    if data.name not in FOLDER_DATA_SETS or data.cache_dir is not None:
        return config
    return config.model_copy(
        update={"data": data.model_copy(update={"cache_dir": Path(root) / DATA_CACHE_DIR})}
    )


def check_run_data(config: Any, root: Path, console: Any = None) -> dict[str, Any] | None:
    """Check the run's image folder, write ``root/data-check.json``; None for other data sets.

    Raises the check's DataError (one line) after writing the file and printing the tables.
    """
    if config.data.name not in FOLDER_DATA_SETS:
        return None
    prepared = prepare_folder(with_run_cache(config, root).data)
    document = prepared.check.to_dict()
    atomic_write(Path(root) / DATA_CHECK_FILE, json.dumps(document, indent=2))
    if console is not None:
        print_check(prepared.check, console)
    enforce(prepared.check, config.data)
    return document


def read_data_check(root: Path) -> dict[str, Any] | None:
    """The run's ``data-check.json`` (for the report), or None when the run has none."""
    path = Path(root) / DATA_CHECK_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
