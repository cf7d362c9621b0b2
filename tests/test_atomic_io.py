"""``unetkit._io``: writes land whole or not at all, and leave no temporary files behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetkit._io import atomic_path, write_json_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half a new fi")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_the_temporary_sits_beside_the_target_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "mask.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".mask.nii.gz.")
        assert not target.exists()  # nothing visible under the final name until the block ends
        tmp.write_bytes(b"\x1f\x8b")
    assert target.read_bytes() == b"\x1f\x8b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


def test_text_and_json_helpers_replace_the_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("stale")
    write_json_atomic(target, {"dice": 0.5, "images": 2})
    assert target.read_text() == '{\n  "dice": 0.5,\n  "images": 2\n}\n'
    assert json.loads(target.read_text()) == {"dice": 0.5, "images": 2}
    write_text_atomic(target, "é\n")
    assert target.read_bytes() == "é\n".encode()


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder .*nowhere does not exist"):
        write_text_atomic(tmp_path / "nowhere" / "x.txt", "x")
