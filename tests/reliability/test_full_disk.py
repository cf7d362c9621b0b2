"""A full disk (ENOSPC) or a read-only output folder (EROFS / EACCES) while ``predict``, ``export`` and training write.

Simulated (the tests run as root, so permissions do not stop a write, and a tmpfs needs privileges): the writes of
the output folder fail the way the kernel fails them, mid-write after some bytes reached the file (a wrapped
``open`` whose ``write`` raises ENOSPC), at the rename, inside safetensors' own writer (Rust, not Python's ``open``),
or when the temporary file is created (EROFS / EACCES). Each time: exit 1 with one line naming the file, nothing
half-written under a final name, no temporary left, and the outputs of an earlier run byte for byte intact.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from _kill import ISBI, temporaries

pytestmark = pytest.mark.skipif(not ISBI.is_dir(), reason="real datasets not found")


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _cli(argv: list[str]) -> tuple[int, str]:
    from unetkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


class _FullDisk:
    """Files opened for writing under ``folder`` accept ``budget`` bytes, then raise ENOSPC (like a full disk)."""

    def __init__(self, folder: Path, budget: int = 100) -> None:
        self.folder, self.budget, self.hits = str(folder), budget, 0
        self.real_open = builtins.open

    def open(self, file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = self.real_open(file, mode, *args, **kwargs)
        if any(m in mode for m in "wax+") and str(os.fspath(file)).startswith(self.folder):
            self.hits += 1
            budget = self.budget
            real_write = handle.write

            def write(data):  # type: ignore[no-untyped-def]
                nonlocal budget
                if len(data) > budget:
                    real_write(data[:budget])
                    handle.flush()
                    budget = 0
                    raise OSError(errno.ENOSPC, "No space left on device")
                budget -= len(data)
                return real_write(data)

            handle.write = write
        return handle


def _read_only(folder: Path, code: int):  # type: ignore[no-untyped-def]
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        if str(kwargs.get("dir", "")).startswith(str(folder)):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    return mkstemp


@pytest.fixture()
def predicted(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A tiny run, three real ISBI slices, and a first complete predict into out/."""
    from _run_factory import make_run

    run_dir = make_run(tmp_path / "run", tile=128)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"s{i}.png").write_bytes((ISBI / "images" / f"{i}.png").read_bytes())
    out = tmp_path / "out"
    argv = ["predict", str(run_dir), str(inputs), "--out", str(out), "--prob", "--sequential", "--precision", "fp32"]
    assert _cli(argv)[0] == 0
    return argv, out


def _assert_intact(out: Path, before: dict[str, str]) -> None:
    assert _hashes(out) == before, "an earlier output changed or a new file appeared"
    assert not temporaries(out)


@pytest.mark.parametrize("failure", ["enospc-mid-write", "enospc-at-rename", "erofs", "eacces"])
def test_predict_into_a_full_or_read_only_folder(predicted, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:  # type: ignore[no-untyped-def]
    argv, out = predicted
    before = _hashes(out)
    if failure == "enospc-mid-write":
        disk = _FullDisk(out)
        monkeypatch.setattr(builtins, "open", disk.open)
    elif failure == "enospc-at-rename":
        real_replace = os.replace

        def replace(src, dst):  # type: ignore[no-untyped-def]
            if str(dst).startswith(str(out)):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    else:
        code = errno.EROFS if failure == "erofs" else errno.EACCES
        monkeypatch.setattr(tempfile, "mkstemp", _read_only(out, code))
    code, text = _cli(argv)
    monkeypatch.undo()
    assert code == 1 and "Traceback" not in text, text
    reason = {"erofs": "Read-only file system", "eacces": "Permission denied"}.get(failure, "No space left on device")
    lines = [line for line in text.splitlines() if "cannot write" in line]
    assert len(lines) == 3, text  # one line per input, naming the file that could not be written
    assert all(reason in line and str(out) in line and line.startswith("unetkit predict: ") for line in lines), lines
    assert "0 of 3 input(s) predicted" in text
    _assert_intact(out, before)
    if failure == "enospc-mid-write":
        assert disk.hits >= 3  # the writes did start


@pytest.mark.slow  # two ONNX exports with parity checks: about a minute
def test_export_onto_a_full_disk_keeps_the_previous_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    from _run_factory import make_run

    run_dir = make_run(tmp_path / "run", tile=64)
    out = tmp_path / "export"
    out.mkdir()
    argv = ["export", str(run_dir), "--out", str(out / "model.onnx")]
    assert _cli(argv)[0] == 0
    before = _hashes(out)
    disk = _FullDisk(out, budget=4096)
    monkeypatch.setattr(builtins, "open", disk.open)
    code, text = _cli(argv)
    monkeypatch.undo()
    assert code == 1 and "Traceback" not in text, text
    assert disk.hits >= 1
    line = [x for x in text.splitlines() if x.startswith("unetkit export: error:")]
    assert len(line) == 1 and "No space left on device" in line[0] and "model.onnx" in line[0], text
    _assert_intact(out, before)


def test_a_checkpoint_write_on_a_full_disk_stops_training_and_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """safetensors writes from Rust: its writer gets half a file out, then the disk is full (on the 2nd checkpoint)."""
    from _kill import TRAIN_SETTINGS, check_run, train_data

    import unetkit.train.checkpoint as checkpoint

    data = train_data(tmp_path / "data", n=3)
    run_dir = tmp_path / "run"
    real_save = checkpoint.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            real_save(tensors, filename, *args, **kwargs)
            with open(filename, "r+b") as fh:
                fh.truncate(os.path.getsize(filename) // 2)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    settings = [a.replace("train.steps=40", "train.steps=12") for a in TRAIN_SETTINGS]
    code, text = _cli(["train", str(data), "--out", str(run_dir), *settings])
    monkeypatch.undo()
    assert code == 1 and "Traceback" not in text, text[-3000:]
    line = [x for x in text.splitlines() if x.startswith("unetkit train: error:")]
    assert len(line) == 1 and "No space left on device" in line[0] and "state.safetensors.8" in line[0], text[-2000:]
    assert check_run(run_dir)[-1] == "state@4"  # the first checkpoint, complete and loadable
    assert not temporaries(run_dir)
    np.testing.assert_equal(sorted(p.name for p in run_dir.glob("state.safetensors.*")), ["state.safetensors.4"])
