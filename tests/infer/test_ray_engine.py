"""``unetkit predict --engine ray`` on a real two-node Ray cluster on loopback (a head and a worker, 1 CPU each).

The cluster is started once for the module and stopped after it. Each test connects to it through ``--address``
(the engine's own connection path) and compares with ``unetkit predict`` without Ray, byte for byte.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run

from unetkit.cli import main

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

MAGNETIC = "magnetic_tile_defects/images"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a head node and one worker node, both on 127.0.0.1, 1 CPU each, no dashboard."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        # On Linux Ray replaces a loopback address by the machine's outward IP before connecting, where this
        # cluster does not listen; its single-machine mode keeps 127.0.0.1.
        env.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
        nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        try:
            nodes.add_node(**node)
            nodes.wait_for_nodes()
            yield nodes.address
        finally:
            nodes.shutdown()


@pytest.fixture(scope="module")
def run_gray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), in_channels=1, classes=2, tile=64, max_pass_pixels=None)


@pytest.fixture(scope="module")
def inputs(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """50 real magnetic-tile photographs (248 x 373 and similar, greyscale JPEG), then two corrupt files."""
    files = sorted((datasets / MAGNETIC).rglob("*.jpg"))[:50]
    assert len(files) == 50
    bad = tmp_path_factory.mktemp("bad")
    (bad / "truncated.jpg").write_bytes(files[0].read_bytes()[:300])
    (bad / "not_an_image.png").write_text("hello")
    return [*files, bad / "truncated.jpg", bad / "not_an_image.png"]


@pytest.fixture(scope="module")
def local_out(run_gray: Path, inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert main(["predict", str(run_gray), *map(str, inputs), "--out", str(out), "--backend", "torch"]) == 1
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_ray_outputs_equal_local_ones_byte_for_byte_and_corrupt_inputs_are_listed(
    cluster: str, run_gray: Path, inputs: list[Path], local_out: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ray"
    argv = ["predict", str(run_gray), *map(str, inputs), "--out", str(out), "--backend", "torch",
            "--engine", "ray", "--address", cluster, "--actors", "2"]
    capsys.readouterr()
    assert main(argv) == 1  # two inputs failed
    captured = capsys.readouterr()
    local = files_of(local_out)
    assert len(local) == 100  # mask + overlay for each of the 50 good inputs, nothing for the corrupt ones
    assert files_of(out) == local  # same names, same bytes, no temporary left
    assert "50 done, 0 skipped, 2 failed of 52 input(s)" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("  failed: ")]
    assert [line.split(": ")[1] for line in failed] == [str(inputs[-2]), str(inputs[-1])]
    # Outcome lines come in input order, as from the local command.
    done = [line.split(" -> ")[0] for line in captured.out.splitlines() if " -> " in line]
    assert done == [str(p) for p in inputs[:50]]

    # A re-run finishes only what is missing.
    (out / f"{inputs[7].stem}_overlay.png").unlink()
    assert main([*argv, "--skip-existing"]) == 1
    captured = capsys.readouterr()
    assert "1 done, 49 skipped, 2 failed of 52 input(s)" in captured.out
    assert files_of(out) == local


def _actor_processes() -> list[psutil.Process]:
    """The model actors of this test's cluster: processes below this one titled ``ray::PredictActor...``."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with __import__("contextlib").suppress(psutil.Error):
            if any("PredictActor" in part for part in proc.cmdline()):
                found.append(proc)
    return found


def test_a_killed_actor_s_files_are_retried_and_every_output_is_written_once(
    cluster: str, run_gray: Path, inputs: list[Path], local_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    out.mkdir()
    killed: dict[str, object] = {}

    def kill_one_actor_mid_run() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            masks = [p for p in out.glob("*.png") if not p.name.endswith("_overlay.png")]
            actors = _actor_processes()
            if len(masks) >= 5 and actors:
                victim = actors[0]
                killed.update(pid=victim.pid, outputs_then=len(masks))
                os.kill(victim.pid, signal.SIGKILL)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_actor_mid_run, daemon=True)
    killer.start()
    rc = main(["predict", str(run_gray), *map(str, inputs[:50]), "--out", str(out), "--backend", "torch",
               "--engine", "ray", "--address", cluster, "--actors", "2"])
    killer.join(timeout=5)
    assert killed, "no actor was found to kill"
    assert int(killed["outputs_then"]) < 50  # type: ignore[call-overload]  # it died mid-run
    assert not psutil.pid_exists(int(killed["pid"])) or psutil.Process(int(killed["pid"])).status() == "zombie"  # type: ignore[call-overload]
    assert rc == 0
    assert files_of(out) == files_of(local_out)  # each output once, complete, no temporary left


def test_a_geotiff_split_into_chunks_equals_the_local_windowed_prediction(
    cluster: str, datasets: Path, tmp_path: Path
) -> None:
    rasterio = pytest.importorskip("rasterio")
    from PIL import Image

    from unetkit.infer.pipeline import plan_jobs
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.raster import predict_raster
    from unetkit.infer.ray_engine import PredictorSpec, RayOptions, ray_pool

    jpg = datasets / "dubai_aerial_landcover/images/tile_1/image_part_002.jpg"
    array = np.moveaxis(np.asarray(Image.open(jpg).convert("RGB")), -1, 0)[:, 20:353, 30:451].copy()
    path = tmp_path / "dubai.tif"
    with rasterio.open(path, "w", driver="GTiff", height=333, width=421, count=3, dtype="uint8", crs="EPSG:32640",
                       transform=rasterio.Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 2790000.0)) as ds:
        ds.write(array)
    run = make_run(tmp_path / "run", in_channels=3, classes=3, tile=96, overlap=0.25)
    local = tmp_path / "local"
    local.mkdir()
    predictor = Predictor.from_run(run, backend="torch")
    threads = torch.get_num_threads()
    # One torch thread, as in each actor (and in `unetkit predict` on 2 cores): oneDNN splits its sums by thread
    # count, so other counts may differ in the last float bit of the probabilities.
    torch.set_num_threads(1)
    try:
        result = predict_raster(predictor, path, mask_path=local / "dubai.tif", prob_path=local / "dubai_prob.tif",
                                window=250)
    finally:
        torch.set_num_threads(threads)
    assert result.windows.chunks == 9  # 3 x 3 chunks, spread over the 2 actors in 4 ranges

    jobs = plan_jobs([path], tmp_path / "ray", prob=True, uncertainty=False, overlay=False)
    (tmp_path / "ray").mkdir()
    spec = PredictorSpec(runs=(str(run),), backend="torch")
    with ray_pool(spec, options=RayOptions(address=cluster, actors=2)) as pool:
        (outcome,) = pool.predict(jobs, windowed=lambda _path: True, raster_window=250)
    assert outcome.error is None and [p.name for p in outcome.written] == ["dubai.tif", "dubai_prob.tif"]
    for name in ("dubai.tif", "dubai_prob.tif"):
        with rasterio.open(local / name) as want, rasterio.open(tmp_path / "ray" / name) as got:
            assert got.crs == want.crs and got.transform == want.transform
            np.testing.assert_array_equal(got.read(), want.read())
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["dubai.tif", "dubai_prob.tif"]


def test_a_run_the_workers_cannot_load_is_one_clear_line(
    cluster: str, run_gray: Path, inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_gray, broken)
    for weights in (broken / "best").glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    out = tmp_path / "out"
    rc = main(["predict", str(broken), *map(str, inputs[:3]), "--out", str(out), "--backend", "torch",
               "--engine", "ray", "--address", cluster, "--actors", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("unetkit predict: error: a Ray worker cannot load the run: ")
    assert list(out.iterdir()) == []


def test_actors_the_cluster_has_no_room_for_are_a_clear_error(cluster: str, run_gray: Path) -> None:
    from unetkit.infer.ray_engine import PredictorSpec, RayOptions, ray_pool

    options = RayOptions(address=cluster, actors=3, start_timeout_s=5)  # 3 x 1 CPU on a 2-CPU cluster
    spec = PredictorSpec(runs=(str(run_gray),), backend="torch")
    with pytest.raises(ValueError, match=r"did not start within 5 s: 3 actor\(s\) x 1 CPU, 0 GPU asked; "
                                         r"the cluster has 2 CPU, 0 GPU"):
        with ray_pool(spec, options=options):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_address_is_one_clear_line(
    run_gray: Path, inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    rc = main(["predict", str(run_gray), str(inputs[0]), "--out", str(tmp_path / "out"), "--engine", "ray",
               "--address", address])
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err == [f"unetkit predict: error: cannot reach the Ray cluster at {address} within 10 s: Connection refused"]


def test_without_ray_the_error_says_which_extra_to_install(
    run_gray: Path, inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` now fails as if it were absent
    rc = main(["predict", str(run_gray), str(inputs[0]), "--out", str(tmp_path / "out"), "--engine", "ray"])
    assert rc == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "unetkit predict: error: --engine ray needs Ray: pip install 'unetkit[ray]'"]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
