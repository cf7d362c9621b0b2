"""``unetkit serve`` on the command line: argument checks, the access rule for non-loopback hosts, the missing
extra, and a real server process that serves until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _serve_helpers import Client, isbi_crop, png_bytes

from unetkit.cli import main
from unetkit.commands.serve import is_loopback


def test_cli_refuses_a_missing_run_and_bad_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", str(tmp_path / "missing")]) == 1
    assert "missing/plan.yaml: no such plan file" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing"), "--port", "70000"]) == 1
    assert "--port must be in 0..65535" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing"), "--max-batch", "0"]) == 1
    assert "--max-batch and --max-queue must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("192.168.1.20", False), ("myhost", False)])  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_host_needs_a_key_or_an_explicit_no_auth(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("UNETKIT_API_KEY", raising=False)
    run = str(tmp_path / "missing")
    assert main(["serve", run, "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err == ("unetkit serve: error: listening on 0.0.0.0 lets other machines use the model: pass --api-key KEY "
                   "(or set UNETKIT_API_KEY), or --insecure-no-auth to serve without a key\n")
    # Each way out of the rule gets past it (to the missing run).
    for extra, env in ((["--api-key", "k"], None), (["--insecure-no-auth"], None), ([], "from-env")):
        if env:
            monkeypatch.setenv("UNETKIT_API_KEY", env)
        assert main(["serve", run, "--host", "0.0.0.0", *extra]) == 1
        assert "missing/plan.yaml: no such plan file" in capsys.readouterr().err


def test_a_missing_serve_extra_is_one_line_with_the_install_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what an interpreter without uvicorn reports
    assert main(["serve", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err == "unetkit serve: uvicorn is not installed; install the serve extra: pip install 'unetkit[serve]'\n"


def test_cli_serves_until_interrupted(run_2d: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("UNETKIT_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetkit.cli", "serve", str(run_2d), "--port", "0", "--no-fast", "--max-wait-ms", "2",
         "--batching", "on"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(f"serving {run_2d} on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        status, _, body = Client(port).request("POST", "/predict?format=json", png_bytes(isbi_crop()))
        assert status == 200 and json.loads(body)["shape"] == [150, 170]
        info = json.loads(Client(port).request("GET", "/info")[2])
        from unetkit.config import Plan

        pair = 2 * Plan.load(run_2d / "plan.yaml").infer.batch_size  # on a CPU: two requests' batches per pass
        assert info["batching"] == {"enabled": True, "max_batch": pair, "max_wait_ms": 2.0}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in err and "Traceback" not in err


def test_cli_serves_an_exported_onnx_graph(run_2d: Path, tmp_path: Path) -> None:
    from unetkit.config import Plan
    from unetkit.infer.predictor import Predictor
    from unetkit.models.base import load_model
    from unetkit.runtime.onnx_pipeline import export_pipeline

    graph = tmp_path / "model.onnx"
    export_pipeline(load_model(run_2d / "best"), graph, in_channels=1,
                    tile_size=Plan.load(run_2d / "plan.yaml").infer.tile_size)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("UNETKIT_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetkit.cli", "serve", str(run_2d), "--port", "0", "--onnx", str(graph)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1].split("/")[0])  # type: ignore[union-attr]
        assert proc.stdout.readline().strip() == f"backend: ONNX Runtime, fp32 graph {graph} (--onnx)"  # type: ignore[union-attr]
        status, _, body = Client(port).request("POST", "/predict?format=json", png_bytes(isbi_crop()))
        info = json.loads(Client(port).request("GET", "/info")[2])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert status == 200
    assert info["batching"]["enabled"] is True  # --batching auto: on
    expected = Predictor.from_run(run_2d, backend="onnx", onnx_path=graph)(isbi_crop()[None].astype(np.float32))
    shares = {c["index"]: c["pixels"] for c in json.loads(body)["classes"]}
    assert shares == {k: int((expected.labels == k).sum()) for k in shares}


def test_default_max_batch_is_two_request_batches_on_a_cpu_and_16_on_cuda() -> None:
    from unetkit.commands.serve import default_max_batch

    assert default_max_batch("cpu", 4) == 8
    assert default_max_batch("cpu", 1) == 2
    assert default_max_batch("cuda:0", 4) == 16
