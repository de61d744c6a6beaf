"""Names derived from target specs and run names stay distinct (case 11)."""

from __future__ import annotations

from pathlib import Path

from pipeline.run_folder import RunFolder, board_limit_name, slug


def test_targets_that_slug_alike_get_their_own_folder_and_board_slot() -> None:
    run = RunFolder(Path("/runs/x"))
    pairs = [
        ("ssh://me@orin-1:22/jetson", "ssh://me@orin.1:22/jetson"),
        ("orin-1", "orin.1"),
        ("ssh://me@a:22", "ssh://me@A:22"),
    ]
    for one, other in pairs:
        assert run.target_dir(one) != run.target_dir(other)
        assert board_limit_name(one) != board_limit_name(other)
        for text in (one, other):
            assert slug(text) == slug(text) and slug(text).startswith(slug(text)[:4])
            assert all(c.isalnum() or c == "-" for c in slug(text))


def test_plain_names_are_kept() -> None:
    assert slug("local-cpu") == "local-cpu"
    assert RunFolder(Path("/r")).target_dir("local-cpu") == Path("/r/validate/local-cpu")
    assert slug("orin.1").startswith("orin-1-") and len(slug("orin.1")) == len("orin-1-") + 8
