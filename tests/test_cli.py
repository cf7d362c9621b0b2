"""The ``unetkit`` dispatcher: start-up cost, --version, help texts, exit statuses, missing packages."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unetkit.cli as cli
from unetkit.cli import build_parser, main, missing_package_message


def _imported_modules(args: list[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m unetkit.cli ARGS`` and return the process and every module it imported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "unetkit.cli", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    # importtime lines: "import time:  self [us] | cumulative | <indent>module"
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


def test_help_does_not_import_torch() -> None:
    done, modules = _imported_modules(["--help"])
    assert done.returncode == 0 and "COMMAND" in done.stdout
    assert "unetkit.commands._data_args" in modules  # the command modules were imported...
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}  # ...without torch
    # importtime does not list modules loaded through importlib.import_module (how cli.py finds the
    # commands), so ask the interpreter itself too.
    probe = (
        "import sys, unetkit.cli as c; c.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'unetkit')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    names = ast.literal_eval(loaded.stdout)
    assert "unetkit.commands.train" in names and "unetkit.commands.diffusion" in names
    assert not [n for n in names if n.split(".")[0] == "torch"]


def test_check_does_not_import_torch(datasets: Path) -> None:
    done, modules = _imported_modules(["check", str(datasets / "isbi2012_em_membrane")])
    assert "result:" in done.stdout and "unetkit.data.checks" in modules, done.stderr[-2000:]
    assert "torch" not in modules


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"unetkit {importlib.metadata.version('unetkit')}"


def _parsers(parser: argparse.ArgumentParser, path: str = "unetkit") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_option_has_help_and_shows_its_default() -> None:
    missing, no_default = [], []
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if not action.help:
                missing.append(f"{path} {action.option_strings[0]}")
                continue
            shown = formatter._expand_help(action)
            default = action.default
            if default not in (None, False, [], argparse.SUPPRESS) and "default" not in shown:
                no_default.append(f"{path} {action.option_strings[0]}: {shown}")
    assert missing == [] and no_default == []


def test_help_appends_the_default_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["diffusion", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "AdamW learning rate (default: 0.0002)" in text
    assert "--batch-size BATCH_SIZE images per training step (default: 16)" in text


def test_every_listed_command_exists() -> None:
    for name in cli.COMMANDS:
        module = importlib.import_module(f"unetkit.commands.{name.replace('-', '_')}")  # label-studio: label_studio
        assert callable(module.add_arguments) and callable(module.run), name
    assert set(_parsers(build_parser())[0][1]._subparsers._group_actions[0].choices) == set(cli.COMMANDS)


def test_a_bad_input_exits_1_and_a_bad_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unetkit plan: error: ") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", str(tmp_path), "--no-such-flag"])
    assert exit_info.value.code == 2


def test_a_missing_optional_package_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    import unetkit.commands.plan as plan_command

    def needs_onnxruntime(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")

    monkeypatch.setattr(plan_command, "run", needs_onnxruntime)
    assert main(["plan", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "unetkit plan: error: onnxruntime is not installed: pip install 'unetkit[onnx]'\n"
    )


def test_missing_package_messages() -> None:
    own_hint = ImportError("GeoTIFF support needs rasterio: pip install 'unetkit[geo]'")
    assert missing_package_message(own_hint) == "GeoTIFF support needs rasterio: pip install 'unetkit[geo]'"
    other = ModuleNotFoundError("No module named 'foo'", name="foo.bar")
    assert missing_package_message(other) == "No module named 'foo' (pip install foo)"
    assert missing_package_message(ModuleNotFoundError("x", name="matplotlib.pyplot")) == (
        "matplotlib is not installed: pip install 'unetkit[viz]'"
    )


def test_a_broken_import_inside_unetkit_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import unetkit.commands.plan as plan_command

    def broken(args: argparse.Namespace) -> int:
        raise ImportError("cannot import name 'nothing' from 'unetkit.config'")

    monkeypatch.setattr(plan_command, "run", broken)
    with pytest.raises(ImportError, match="cannot import name"):
        main(["plan", str(tmp_path)])


def test_every_device_option_defaults_to_auto_and_auto_means_cuda_when_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    devices = [(path, a) for path, p in _parsers(build_parser()) for a in p._actions if "--device" in a.option_strings]
    assert len(devices) == 10 and all(a.default == "auto" for _, a in devices), [(p, a.default) for p, a in devices]
    seen: list[str] = []
    import unetkit.commands.plan as plan_command

    monkeypatch.setattr(plan_command, "run", lambda args: seen.append(args.device) or 0)
    for present, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda present=present: present)
        assert main(["plan", "somewhere"]) == 0
        assert seen[-1] == expected
    assert main(["plan", "somewhere", "--device", "cpu"]) == 0 and seen[-1] == "cpu"
