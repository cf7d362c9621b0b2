"""Predicting many files: the threaded pipeline writes the sequential loop's files byte for byte, reports bad
files in input order, batches same-shape one-tile images, and shards the inputs under torchrun.

Every comparison pins fp32 (``--precision fp32``): this CPU has native bf16, where ``auto`` would pick it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_image
from unetkit.infer import pipeline
from unetkit.infer.files import expand_inputs
from unetkit.infer.pipeline import PipelineOptions, plan_jobs, predict_files, predict_sequential
from unetkit.infer.predictor import Predictor

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "isbi2012_em_membrane" / "images"
TILE = 96
MIXED = [(160, 160), (80, 96)] * 5  # 4 tiles each / smaller than one tile (padded)


def isbi_folder(folder: Path, sizes: list[tuple[int, int]], *, first: int = 0) -> list[Path]:
    """Real ISBI slices ``first, first + 1, ...`` cropped to ``sizes`` (rows, cols), saved as ``00.png, 01.png, ...``."""
    if not ISBI.is_dir():
        pytest.skip(f"ISBI images not found under {ISBI}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (rows, cols) in enumerate(sizes):
        array = np.asarray(Image.open(ISBI / f"{(first + i) % 30}.png"))
        path = folder / f"{i:02d}.png"
        Image.fromarray(array[40 : 40 + rows, 30 : 30 + cols]).save(path)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def one_compute_thread() -> Iterator[None]:
    """One compute thread for references and pipelines alike: the pipeline keeps a core for reading and writing,
    and another thread count may change the last bits of a convolution's sums (seen after other tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def arrow_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " -> " in line]


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run2d"), tile=TILE, overlap=0.25)


@pytest.fixture(scope="module")
def predictor(run_2d: Path) -> Predictor:
    return Predictor.from_run(run_2d, precision="fp32")


@pytest.fixture(autouse=True)
def keep_torch_threads() -> object:
    """``--threads`` sets torch's threads for the whole process: give the next tests back what they had."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_pipeline_writes_the_sequential_loops_files_byte_for_byte(
    run_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    isbi_folder(tmp_path / "in", MIXED)
    torch.set_num_threads(2)  # --threads 1 must change it (restored after the test)
    common = [str(run_2d), str(tmp_path / "in"), "--precision", "fp32", "--prob", "--threads", "1"]
    assert main(["predict", *common, "--out", str(tmp_path / "seq"), "--sequential"]) == 0
    sequential = capsys.readouterr().out
    assert main(["predict", *common, "--out", str(tmp_path / "pipe")]) == 0
    piped = capsys.readouterr().out
    assert torch.get_num_threads() == 1
    expected = files_of(tmp_path / "seq")
    assert len(expected) == 3 * len(MIXED)  # mask, probabilities, overlay
    assert files_of(tmp_path / "pipe") == expected
    assert arrow_lines(piped) == arrow_lines(sequential)
    assert [line.split(" -> ")[0] for line in arrow_lines(piped)] == [str(tmp_path / "in" / f"{i:02d}.png")
                                                                      for i in range(len(MIXED))]
    assert f"10 of 10 input(s) predicted into {tmp_path / 'pipe'}" in piped


@pytest.mark.parametrize("sizes", [(1, 1, 1, 1), (3, 2, 8, 5)], ids=["smallest", "wide"])
def test_outcomes_keep_input_order_while_reads_run_ahead_and_writes_behind(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sizes: tuple[int, int, int, int]
) -> None:
    files = isbi_folder(tmp_path / "in", MIXED[:6])
    (tmp_path / "out").mkdir()
    (tmp_path / "ref").mkdir()
    jobs = plan_jobs(files, tmp_path / "out", prob=True, uncertainty=False, overlay=True)
    reference = list(predict_sequential(predictor, plan_jobs(files, tmp_path / "ref", prob=True, uncertainty=False,
                                                              overlay=True)))
    first_write_done = threading.Event()
    computed_while_writing: list[Path] = []
    reader_threads: set[str] = set()
    real_write, real_read, real_call = pipeline.write_outputs, pipeline.read_input, Predictor.__call__

    def slow_first_write(path: Path, *args: object, **options: bool) -> list[Path]:
        if path == files[0]:
            time.sleep(1.0)  # the first file's write finishes last; its outcome must still come first
            first_write_done.set()
        return real_write(path, *args, **options)  # type: ignore[arg-type]

    def read(path: Path) -> object:
        reader_threads.add(threading.current_thread().name)
        return real_read(path)

    def call(self: Predictor, image: np.ndarray, **options: object) -> object:
        if not first_write_done.is_set():
            computed_while_writing.append(image.shape)
        return real_call(self, image, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "write_outputs", slow_first_write)
    monkeypatch.setattr(pipeline, "read_input", read)
    monkeypatch.setattr(Predictor, "__call__", call)
    readers, writers, prefetch, backlog = sizes
    options = PipelineOptions(readers=readers, writers=writers, prefetch=prefetch, backlog=backlog)
    outcomes = list(predict_files(predictor, jobs, options=options))
    assert [o.path for o in outcomes] == files
    assert all(o.error is None for o in outcomes)
    assert [[p.name for p in o.written] for o in outcomes] == [[p.name for p in o.written] for o in reference]
    assert files_of(tmp_path / "out") == files_of(tmp_path / "ref")
    assert reader_threads and all(name.startswith("unetkit-read") for name in reader_threads)
    # Until file 0 was written, the network went on with the next files, as many as the backlog allows (file 0
    # was computed before its write began).
    assert len(computed_while_writing) == 1 + min(backlog, len(files) - 1)


def test_a_bad_file_is_reported_in_input_order_and_the_others_are_written(
    run_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    good = isbi_folder(folder, MIXED[:6])
    (folder / "02b.png").write_bytes(good[0].read_bytes()[:150])  # truncated: sorts between 02 and 03
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    from unetkit.data import io

    real_write = io.write_image

    def full_disk_for_04(path: str | Path, *args: object, **kwargs: object) -> None:
        if Path(path).name == "04_prob.tif":
            raise OSError("No space left on device")
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_image", full_disk_for_04)
    results = {}
    for mode in ("sequential", "pipeline"):
        out = tmp_path / mode
        extra = ["--sequential"] if mode == "sequential" else []
        code = main(["predict", str(run_2d), str(folder), str(notes), "--out", str(out), "--precision", "fp32",
                     "--prob", "--no-overlay", *extra])
        captured = capsys.readouterr()
        results[mode] = (code, arrow_lines(captured.out), captured.err.strip().splitlines(), files_of(out))
    code, arrows, errors, written = results["pipeline"]
    assert results["sequential"] == (code, arrows, errors, written)
    assert code == 1
    assert [line.split(" -> ")[0].rsplit("/", 1)[1] for line in arrows] == ["00.png", "01.png", "02.png", "03.png",
                                                                            "05.png"]
    assert len(errors) == 3
    assert errors[0].startswith(f"unetkit predict: {folder / '02b.png'}: ") and "unreadable image" in errors[0]
    assert errors[1] == f"unetkit predict: {folder / '04.png'}: No space left on device"
    assert errors[2].startswith(f"unetkit predict: {notes}: unsupported image type '.txt'")
    # 04's mask was written before its probabilities failed: the loop leaves it too.
    assert sorted(written) == sorted([f"{i:02d}.png" for i in range(6)] + [f"{i:02d}_prob.tif" for i in (0, 1, 2, 3, 5)])
    assert not [name for name in os.listdir(tmp_path / "pipeline") if ".tmp" in name or name.startswith(".")]


def _near_threshold(probs: np.ndarray, margin: float) -> np.ndarray:
    """Pixels whose two-class decision could flip under a change of ``margin`` in the probabilities."""
    return np.abs(probs[1] - probs[0]) <= 2 * margin


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_same_shape_one_tile_images_share_batches_with_the_results_of_one_at_a_time(
    run_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tta: str
) -> None:
    # 0-2 and 4-5 share a shape smaller than a tile (padded), 3 is a full tile, 6 spans four tiles.
    sizes = [(80, 96)] * 3 + [(96, 96)] + [(80, 96)] * 2 + [(160, 160)]
    files = isbi_folder(tmp_path / "in", sizes)
    (tmp_path / "out").mkdir()
    predictor = Predictor.from_run(run_2d, precision="fp32", batch_size=3, tta=tta)
    batches: list[int] = []
    real_network = Predictor._network

    def network(self: Predictor, batch: torch.Tensor) -> torch.Tensor:
        batches.append(batch.shape[0])
        return real_network(self, batch)

    monkeypatch.setattr(Predictor, "_network", network)
    jobs = plan_jobs(files, tmp_path / "out", prob=True, uncertainty=tta != "none", overlay=False)
    outcomes = list(predict_files(predictor, jobs, options=PipelineOptions(batch_images=True)))
    assert [o.error for o in outcomes] == [None] * len(files)
    if tta == "none":  # [0 1 2] | [3] (another shape) | [4 5] | image 6's four tiles, three per batch
        assert batches == [3, 1, 2, 3, 1]
    else:  # at most batch_size samples per call: the 3 x 4 views of [0 1 2] in four calls, not [3, 1] per image
        assert batches[:4] == [3, 3, 3, 3]
        assert sum(batches) == 4 * (len(files) + 3)
    for path in files:
        alone = predictor(read_image(path).array.astype(np.float32))
        mask = read_image(tmp_path / "out" / path.name).array[0]
        probs = read_image(tmp_path / "out" / f"{path.stem}_prob.tif").array
        np.testing.assert_allclose(probs, alone.probabilities, rtol=0, atol=1e-6)
        decided = ~_near_threshold(alone.probabilities, 1e-6)
        assert decided.mean() > 0.99
        np.testing.assert_array_equal(mask[decided], alone.labels[decided])
        if tta != "none":
            uncertainty = read_image(tmp_path / "out" / f"{path.stem}_uncertainty.tif").array[0]
            np.testing.assert_allclose(uncertainty, alone.uncertainty, rtol=0, atol=1e-6)


def test_cli_batch_images_and_a_bad_file_breaking_a_group(
    run_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    good = isbi_folder(folder, [(64, 64)] * 5)
    (folder / "01b.png").write_bytes(good[0].read_bytes()[:100])
    batches: list[int] = []
    real_network = Predictor._network
    monkeypatch.setattr(Predictor, "_network", lambda self, b: batches.append(b.shape[0]) or real_network(self, b))
    common = [str(run_2d), str(folder), "--precision", "fp32", "--no-overlay"]
    assert main(["predict", *common, "--out", str(tmp_path / "one"), "--sequential"]) == 1
    assert batches == [1] * 5
    batches.clear()
    assert main(["predict", *common, "--out", str(tmp_path / "batched"), "--batch-images"]) == 1
    assert batches == [2, 2, 1]  # the plan's batch_size is 2: [00 01] | 01b unreadable | [02 03] | [04]
    err = capsys.readouterr().err
    assert "01b.png" in err and "unreadable image" in err
    assert sorted(files_of(tmp_path / "batched")) == sorted(files_of(tmp_path / "one"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_processes_write_every_output_once_as_one_process_does(run_2d: Path, tmp_path: Path) -> None:
    # Even inputs are large (49 tiles), odd ones small, and the broken file is odd: rank 1 finishes early with
    # an error, which must not stop rank 0 before its work is done.
    folder = tmp_path / "in"
    isbi_folder(folder, [(472, 482), (64, 64)] * 4)
    (folder / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    reference = tmp_path / "one"
    assert main(["predict", str(run_2d), str(folder), "--out", str(reference), "--precision", "fp32", "--prob",
                 "--sequential"]) == 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "unetkit.cli", "predict", str(run_2d), str(folder),
               "--out", str(out), "--precision", "fp32", "--prob"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert files_of(out) == files_of(reference)
    predicted = [line.split(" -> ")[0] for line in arrow_lines(done.stdout)]
    expected = [str(p) for p in expand_inputs([str(folder)]) if p.name != "03.png"]
    assert sorted(predicted) == sorted(expected)  # each input predicted by exactly one process
    assert done.stderr.count("unetkit predict: ") == 1 and f"{folder / '03.png'}: " in done.stderr
    assert f"rank 0 of 2: 4 of 4 input(s) predicted into {out}" in done.stdout
    assert f"rank 1 of 2: 3 of 4 input(s) predicted into {out}" in done.stdout
    assert done.stdout.count(f"7 of 8 input(s) predicted into {out} by 2 processes") == 1


def test_windowed_rasters_among_images_print_their_lines_where_the_loop_does(
    run_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unetkit.data.io import write_image

    folder = tmp_path / "in"
    isbi_folder(folder, [(120, 130)] * 4)
    (folder / "01.png").rename(folder / "01.tif")  # a PNG with a .tif name: unreadable, reported
    write_image(folder / "02.tif", read_image(folder / "02.png").array)  # predicted window by window
    (folder / "02.png").unlink()
    texts = {}
    for mode in ("sequential", "pipeline"):
        both = io.StringIO()  # stdout and stderr in one stream: their relative order is what is compared
        monkeypatch.setattr(sys, "stdout", both)
        monkeypatch.setattr(sys, "stderr", both)
        out = tmp_path / mode
        extra = ["--sequential"] if mode == "sequential" else []
        code = main(["predict", str(run_2d), str(folder), "--out", str(out), "--precision", "fp32", "--windowed",
                     "--min-size", "3", *extra])
        monkeypatch.undo()
        assert code == 1
        texts[mode] = both.getvalue().replace(str(out), "OUT")
    assert texts["pipeline"] == texts["sequential"]
    lines = [line for line in texts["pipeline"].splitlines() if str(folder) in line]
    assert [line.split(": ")[1] if line.startswith("unetkit") else line.split(" -> ")[0] for line in lines] == [
        str(folder / "00.png"), str(folder / "01.tif"), str(folder / "02.tif"), str(folder / "02.tif"),
        str(folder / "03.png")]
    assert "note: --min-size is not applied to windowed rasters" in lines[2]
    assert files_of(tmp_path / "pipeline") == files_of(tmp_path / "sequential")


@pytest.mark.parametrize("flag", ["--threads", "--io-threads"])
def test_thread_counts_below_one_are_usage_errors(
    run_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str
) -> None:
    image = isbi_folder(tmp_path / "in", [(64, 64)])[0]
    assert main(["predict", str(run_2d), str(image), "--out", str(tmp_path / "out"), flag, "0"]) == 1
    assert f"unetkit predict: error: {flag} must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_predict_paths_is_the_cli_s_entry_point_and_skips_complete_inputs(
    run_2d: Path, predictor: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from unetkit.infer.paths import PathRequest, plan_paths, predict_paths

    folder = tmp_path / "in"
    isbi_folder(folder, MIXED[:4])
    assert main(["predict", str(run_2d), str(folder), "--out", str(tmp_path / "cli"), "--precision", "fp32"]) == 0
    capsys.readouterr()
    # A folder and a glob naming one of its files twice: planned once each, in the order given.
    request = PathRequest(inputs=(str(folder / "0[01].png"), str(folder)), out=tmp_path / "lib")
    run = predict_paths(predictor, request)
    assert [job.path.name for job in run.planned] == ["00.png", "01.png", "00.png", "01.png", "02.png", "03.png"]
    outcomes = list(run.outcomes)
    # The repeated inputs would overwrite the first ones' outputs: refused, the others written.
    assert [o.error is None for o in outcomes] == [True, True, False, False, True, True]
    assert "would overwrite" in str(outcomes[2].error)
    assert files_of(tmp_path / "lib") == files_of(tmp_path / "cli")
    # A killed run's complete inputs are skipped, an input with a missing output is redone.
    (tmp_path / "lib" / "01_overlay.png").unlink()
    again = plan_paths(PathRequest(inputs=(str(folder),), out=tmp_path / "lib", skip_existing=True))
    assert [j.path.name for j in again.to_do] == ["01.png"]
    assert [j.path.name for j in again.skipped] == ["00.png", "02.png", "03.png"]
