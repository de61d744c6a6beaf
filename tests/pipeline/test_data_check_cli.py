"""onedge data check: the tables on a good folder, one line and exit 2 on a bad one."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.cli import main


def write_config(tmp_path: Path, folder: Path, *sets: str) -> Path:
    lines = [f"  {s.split('=')[0].split('.')[1]}: {s.split('=')[1]}" for s in sets]
    path = tmp_path / "photos.yaml"
    path.write_text(
        "data:\n  name: imagefolder\n"
        f"  root: {folder}\n  image_size: 40\n  cache_dir: {tmp_path / 'cache'}\n"
        + "".join(line + "\n" for line in lines)
    )
    return path


def test_data_check_prints_the_folder(image_folder: Path, tmp_path: Path, capsys):
    assert main(["data", "check", "--config", str(write_config(tmp_path, image_folder))]) == 0
    out = capsys.readouterr().out
    assert "sneaker" in out and "JPEG" in out and "WEBP" in out and "no problems found" in out
    assert "data check passed: 240 images in 4 classes" in out


def test_data_check_names_a_bad_file_and_skip_lists_it(
    image_folder: Path, bad_image_files: dict[str, Path], tmp_path: Path, capsys
):
    folder = Path(shutil.copytree(image_folder, tmp_path / "photos"))
    shutil.copy(bad_image_files["empty"], folder / "test" / "bag" / "empty.jpg")
    assert main(["data", "check", "--config", str(write_config(tmp_path, folder))]) == 2
    captured = capsys.readouterr()
    (line,) = [x for x in captured.err.splitlines() if x.startswith("error:")]
    assert "test/bag/empty.jpg" in line and "0 bytes" in line
    assert "bad: test/bag/empty.jpg" in captured.out
    skip = write_config(tmp_path, folder, "data.on_bad_image=skip")
    assert main(["data", "check", "--config", str(skip)]) == 0
    assert "skipped: test/bag/empty.jpg" in capsys.readouterr().out
    assert main(["data", "check", "--config", str(skip), "--set", "data.name=digits"]) == 2
