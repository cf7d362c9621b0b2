"""The bad-input corpus: every case's files are made here by code (from real dataset files where one exists).

Read with :mod:`_harness`. ``CASES`` drives ``test_corpus.py`` and ``scripts/badinput_table.py``.
"""

from __future__ import annotations

import gzip
import io
import os
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np
from _harness import DATASETS, MARKER, Case, Workspace
from PIL import Image

ISBI = DATASETS / "isbi2012_em_membrane"
DUBAI = DATASETS / "dubai_aerial_landcover"
DRIVE_TIF = DATASETS / "drive_retina_vessels" / "training" / "images" / "21_training.tif"
HIPPO = DATASETS / "msd_task04_hippocampus"


# -- file builders -----------------------------------------------------------------------------------------
class _Hostile:
    """Unpickling this runs ``touch MARKER``: the payload every loader must refuse without executing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def hostile_pickle(ws: Workspace) -> bytes:
    import pickle

    return pickle.dumps({"weight": _Hostile(ws.root / MARKER)})


def hostile_torch_file(ws: Workspace, rel: str) -> Path:
    """A ``torch.save`` zip whose pickle would run the payload (what a stranger's .pt/.pth/.ckpt can hold)."""
    import torch

    path = ws.p(rel)
    torch.save({"state_dict": {"weight": _Hostile(ws.root / MARKER)}}, path)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int, *, depth: int = 8, colour: int = 0) -> bytes:
    """A valid PNG header declaring ``width x height`` pixels, followed by a few bytes of image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))  # fmt: skip


def bomb_tiff(width: int, height: int) -> bytes:
    """A real 64 x 64 TIFF whose ImageWidth / ImageLength tags are rewritten to ``width`` x ``height`` (LONG)."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, isbi_image(64), photometric="minisblack")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\0"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", data, entry)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", data, entry, tag, 4, 1, width if tag == 256 else height)
    return bytes(data)


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def isbi_pairs(ws: Workspace, rel: str = "data", *, n: int = 3, size: int = 96) -> Path:
    """``n`` real ISBI image/mask pairs (cropped to ``size``) in ``rel/images`` and ``rel/masks``; masks 0/1."""
    root = ws.root / rel
    for i in range(n):
        image = np.asarray(Image.open(ISBI / "images" / f"{i}.png"))[:size, :size]
        mask = (np.asarray(Image.open(ISBI / "masks" / f"{i}.png"))[:size, :size] > 127).astype(np.uint8)
        save_png(ws.p(f"{rel}/images/{i}.png"), image)
        save_png(ws.p(f"{rel}/masks/{i}.png"), mask)
    return root


def isbi_image(size: int = 96) -> np.ndarray:
    return np.asarray(Image.open(ISBI / "images" / "0.png"))[:size, :size].copy()


def isbi_bytes() -> bytes:
    return (ISBI / "images" / "0.png").read_bytes()


def hippo_bytes() -> bytes:
    return (HIPPO / "images" / "hippocampus_001.nii.gz").read_bytes()


def _files(**content: bytes | str):  # type: ignore[no-untyped-def]
    """A builder writing ``{relative path: bytes}`` (the key uses ``__`` for ``/`` and ``_DOT_`` for ``.``)."""

    def build(ws: Workspace) -> None:
        for key, data in content.items():
            path = ws.p(key.replace("__", "/").replace("_DOT_", "."))
            path.write_bytes(data.encode() if isinstance(data, str) else data)

    return build


def _with_run(extra=None):  # type: ignore[no-untyped-def]
    def build(ws: Workspace) -> None:
        ws.run()
        if extra is not None:
            extra(ws)

    return build


def _seq(*builders):  # type: ignore[no-untyped-def]
    def build(ws: Workspace) -> None:
        for b in builders:
            b(ws)

    return build


def _write(rel: str, data):  # type: ignore[no-untyped-def]
    """A builder writing ``data(ws)`` (bytes) or ``data`` to ``rel``."""

    def build(ws: Workspace) -> None:
        ws.p(rel).write_bytes(data(ws) if callable(data) else data)

    return build


def _png(rel: str, make):  # type: ignore[no-untyped-def]
    def build(ws: Workspace) -> None:
        save_png(ws.p(rel), make())

    return build


def _nothing(ws: Workspace) -> None:
    ws.root.mkdir(parents=True, exist_ok=True)


# -- dataset variations (check / train / evaluate) ---------------------------------------------------------
def _mask_255(ws: Workspace) -> None:
    isbi_pairs(ws)
    for i in range(3):
        save_png(ws.p(f"data/masks/{i}.png"), np.asarray(Image.open(ISBI / "masks" / f"{i}.png"))[:96, :96])


def _mask_rgb(ws: Workspace) -> None:
    # Real Dubai tiles: JPEG images, RGB-coded PNG masks, no colour table given.
    for name in ("image_part_001", "image_part_002"):
        ws.p(f"data/images/{name}.jpg").write_bytes((DUBAI / "images" / "tile_1" / f"{name}.jpg").read_bytes())
        ws.p(f"data/masks/{name}.png").write_bytes((DUBAI / "masks" / "tile_1" / f"{name}.png").read_bytes())


def _mask_soft(ws: Workspace) -> None:
    isbi_pairs(ws)
    for i in range(3):
        mask = np.asarray(Image.open(ISBI / "masks" / f"{i}.png"))[:96, :96]
        soft = np.asarray(Image.fromarray(mask).resize((48, 48), Image.BILINEAR).resize((96, 96), Image.BILINEAR))
        save_png(ws.p(f"data/masks/{i}.png"), soft)


def _mask_out_of_range(ws: Workspace) -> None:
    isbi_pairs(ws)
    mask = np.asarray(Image.open(ws.p("data/masks/0.png"))).copy()
    mask[:8, :8] = 7  # class 7 of a two-class dataset
    save_png(ws.p("data/masks/0.png"), mask)


def _size_mismatch(ws: Workspace) -> None:
    isbi_pairs(ws)
    save_png(ws.p("data/masks/1.png"), np.zeros((64, 80), np.uint8))


def _channel_mismatch(ws: Workspace) -> None:
    isbi_pairs(ws)
    save_png(ws.p("data/images/1.png"), np.repeat(isbi_image()[..., None], 3, axis=2))


def _names_mismatch(ws: Workspace) -> None:
    isbi_pairs(ws)
    for i in range(3):
        ws.p(f"data/masks/{i}.png").rename(ws.p(f"data/masks/{i + 5}.png"))


def _images_only(ws: Workspace) -> None:
    isbi_pairs(ws)
    for i in range(3):
        ws.p(f"data/masks/{i}.png").unlink()


def _truncated_in_dataset(ws: Workspace) -> None:
    isbi_pairs(ws)
    data = ws.p("data/images/2.png").read_bytes()
    ws.p("data/images/2.png").write_bytes(data[: len(data) // 2])


def _zero_byte_in_dataset(ws: Workspace) -> None:
    isbi_pairs(ws)
    ws.p("data/images/2.png").write_bytes(b"")


def _volumes(ws: Workspace, *, label_bytes: bytes | None = None, image_bytes: bytes | None = None) -> None:
    for name in ("hippocampus_001", "hippocampus_003"):
        ws.p(f"vol/images/{name}.nii.gz").write_bytes((HIPPO / "images" / f"{name}.nii.gz").read_bytes())
        ws.p(f"vol/labels/{name}.nii.gz").write_bytes((HIPPO / "labels" / f"{name}.nii.gz").read_bytes())
    if image_bytes is not None:
        ws.p("vol/images/hippocampus_003.nii.gz").write_bytes(image_bytes)
    if label_bytes is not None:
        ws.p("vol/labels/hippocampus_003.nii.gz").write_bytes(label_bytes)


def _volume_shape_mismatch(ws: Workspace) -> None:
    # Each case's real label swapped: 001's image with 003's label (35x51x35 against 34x52x35).
    _volumes(ws, label_bytes=(HIPPO / "labels" / "hippocampus_001.nii.gz").read_bytes())


def _run_state(ws: Workspace) -> None:
    """A run folder that looks resumable: plan.yaml (on real data) + best/ (+ state files a case then breaks)."""
    from unetkit.config import Plan

    data = isbi_pairs(ws)
    run = ws.run()
    plan = Plan.load(run / "plan.yaml")
    plan.data.root = str(data)
    plan.train.patch_size = [64, 64]
    plan.save(run / "plan.yaml")


# -- huge / odd images for predict and the API -------------------------------------------------------------
def _bomb(ws: Workspace) -> None:
    ws.run()
    ws.p("in/huge.png").write_bytes(bomb_png(60000, 60000))


def _bomb16(ws: Workspace) -> None:
    ws.run()
    ws.p("in/huge16.png").write_bytes(bomb_png(60000, 60000, depth=16, colour=2))


def _uint16(ws: Workspace) -> None:
    ws.run()
    save_png(ws.p("in/deep.png"), (isbi_image(64).astype(np.uint16) * 257))


def _float_tif(ws: Workspace) -> None:
    import tifffile

    ws.run()
    tifffile.imwrite(ws.p("in/float.tif"), isbi_image(64).astype(np.float32) / 255.0)


def _one_pixel(ws: Workspace) -> None:
    ws.run()
    save_png(ws.p("in/dot.png"), np.full((1, 1), 128, np.uint8))


def _rgb_to_grey_model(ws: Workspace) -> None:
    ws.run()
    ws.p("in/colour.jpg").write_bytes((DUBAI / "images" / "tile_1" / "image_part_001.jpg").read_bytes())


def _truncated_tif(ws: Workspace) -> None:
    ws.run()
    data = DRIVE_TIF.read_bytes()
    ws.p("in/cut.tif").write_bytes(data[: len(data) // 3])


def _hostile_weights_beside(ws: Workspace) -> None:
    """Every other file name a loader might pick up, holding the payload, beside a valid checkpoint."""
    run = ws.run()
    for name in ("model.pt", "model.pth", "model.ckpt", "pytorch_model.bin"):
        hostile_torch_file(ws, f"run/best/{name}")
    (run / "best" / "model.pkl").write_bytes(hostile_pickle(ws))
    save_png(ws.p("in/slice.png"), isbi_image(64))


def _api(fn):  # type: ignore[no-untyped-def]
    """An API call: returns (0, repr) on success, (1, 'Type: message') for a documented error (ValueError/OSError)."""

    def call(ws: Workspace) -> tuple[int, str]:
        try:
            result = fn(ws)
        except (ValueError, OSError) as err:
            return 1, f"{type(err).__name__}: {err}"
        return 0, repr(result)[:200]

    return call


def _read_image(rel: str):  # type: ignore[no-untyped-def]
    def fn(ws: Workspace):  # type: ignore[no-untyped-def]
        from unetkit.data.io import read_image

        return read_image(ws.root / rel).array.shape

    return fn


def _load_model(ws: Workspace):  # type: ignore[no-untyped-def]
    import unetkit

    return unetkit.load_model(ws.root / "run" / "best")


def _encoder_weights(rel: str):  # type: ignore[no-untyped-def]
    def fn(ws: Workspace):  # type: ignore[no-untyped-def]
        import unetkit

        return unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4,
                                    encoder_weights=str(ws.root / rel))  # fmt: skip

    return fn


def _plan_load(rel: str):  # type: ignore[no-untyped-def]
    def fn(ws: Workspace):  # type: ignore[no-untyped-def]
        from unetkit.config import Plan

        return Plan.load(ws.root / rel)

    return fn


def _predictor_from_run(ws: Workspace):  # type: ignore[no-untyped-def]
    from unetkit.infer.predictor import Predictor

    return Predictor.from_run(ws.root / "run", fast=False)


# -- the service (its ASGI app, in-process) ----------------------------------------------------------------
_SERVICE: dict[str, object] = {}


def _service_client(template_run: Path):  # type: ignore[no-untyped-def]
    """One TestClient over the app of a warmed-up service on the tiny run (made once per process)."""
    if "client" not in _SERVICE:
        import atexit

        from starlette.testclient import TestClient

        from unetkit.infer.predictor import Predictor
        from unetkit.serve import Limits, SegmentationService
        from unetkit.serve.app import create_app

        service = SegmentationService(Predictor.from_run(template_run, fast=False), run_dir=template_run,
                                      limits=Limits(max_bytes=4 * 2**20, max_pixels=1024 * 1024, timeout_s=60))
        service.start(warm_up=False)
        service.warm_up()
        client = TestClient(create_app(service))
        _SERVICE.update(client=client, service=service)
        atexit.register(service.close)
    return _SERVICE["client"]


def _post(body, *, query: str = "", content_type: str | None = "application/octet-stream"):  # type: ignore[no-untyped-def]
    def call(ws: Workspace) -> tuple[int, str]:
        client = _service_client(ws.template_run)
        data = body(ws) if callable(body) else body
        headers = {"content-type": content_type} if content_type else {}
        answer = client.post(f"/predict{query}", content=data, headers=headers)
        try:
            text = answer.json().get("error", answer.text[:200])
        except ValueError:
            text = answer.text[:200]
        return answer.status_code, text

    return call


# -- files handed over: plans, ONNX graphs, checkpoint JSON (issue 31) -------------------------------------
def alias_bomb_plan() -> bytes:
    """A "billion laughs" plan: 10 levels of 9 aliases, a few hundred bytes expanding to over 4 * 10**9 nodes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return ("\n".join(lines) + "\ntrain:\n  labels_keys: *a9\n").encode()


def deep_json(levels: int, *, key: str = "x") -> bytes:
    return ('{"' + key + '": ' * 1 + "[" * levels + "]" * levels + "}").encode()


def _graph(rel: str, **kwargs):  # type: ignore[no-untyped-def]
    """A builder: the tiny run plus a small valid ONNX graph of the contract at ``rel`` (see _onnx_graphs)."""
    from _onnx_graphs import graph_bytes

    return _with_run(_seq(_png("in/a.png", isbi_image), _write(rel, lambda ws: graph_bytes(**kwargs))))


def _broken_graph(rel: str, edit):  # type: ignore[no-untyped-def]
    from _onnx_graphs import graph_bytes

    return _with_run(_seq(_png("in/a.png", isbi_image), _write(rel, lambda ws: edit(graph_bytes()))))


def _corrupt(data: bytes) -> bytes:
    """The graph's first 64 bytes inverted (the model header and the first node)."""
    return bytes(b ^ 0xFF for b in data[:64]) + data[64:]


def _external_graph(location: str, data_rel: str | None = None):  # type: ignore[no-untyped-def]
    def build(ws: Workspace) -> None:
        from _onnx_graphs import with_external_weights

        ws.run()
        save_png(ws.p("in/a.png"), isbi_image())
        ws.p("models/x").parent.mkdir(parents=True, exist_ok=True)
        with_external_weights(ws.root / "models" / "model.onnx", location=location,
                              data_file=ws.root / data_rel if data_rel else None)  # fmt: skip
        if location == "missing.bin":
            (ws.root / "models" / "missing.bin").unlink()

    return build


def _predict_onnx(rel: str) -> tuple[str, ...]:
    return ("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out", "--onnx", f"{R}/{rel}")


def _train_plan(rel: str) -> tuple[str, ...]:
    return ("train", f"{R}/nodata", "--out", f"{R}/run", "--plan", f"{R}/{rel}")


def _config_kwarg(**changes):  # type: ignore[no-untyped-def]
    """The tiny run with best/config.json's model kwargs changed (the JSON written as text, NaN included)."""

    def build(ws: Workspace) -> None:
        import json

        run = ws.run()
        config = json.loads((run / "best" / "config.json").read_text())
        config["kwargs"].update(changes)
        (run / "best" / "config.json").write_text(json.dumps(config))

    return build


def _run_path(ws: Workspace) -> None:
    ws.run()


# -- the table ---------------------------------------------------------------------------------------------
R = "{root}"
CASES: list[Case] = [
    # check: datasets
    Case("check-empty-folder", "check", "empty dataset folder", _seq(lambda ws: ws.p("data/.keep").write_text("")),
         1, ("data is empty", "discovery"), args=("check", f"{R}/data")),
    Case("check-missing-folder", "check", "dataset folder does not exist", _nothing, 1,
         ("dataset not found", "nowhere"), args=("check", f"{R}/nowhere")),
    Case("check-images-without-masks", "check", "images but no masks", _images_only, 1, ("data/masks", "holds no mask files"),
         args=("check", f"{R}/data")),
    Case("check-mismatched-names", "check", "mask names match no image", _names_mismatch, 1, ("no_pairs", "file names"),
         args=("check", f"{R}/data")),
    Case("check-zero-byte-image", "check", "zero-byte image in a dataset", _zero_byte_in_dataset, 1,
         ("2.png", "unreadable"), args=("check", f"{R}/data")),
    Case("check-truncated-image", "check", "truncated PNG in a dataset", _truncated_in_dataset, 1,
         ("2.png", "unreadable"), args=("check", f"{R}/data")),
    Case("check-size-mismatch", "check", "mask size differs from its image", _size_mismatch, 1,
         ("1.png", "64x80"), args=("check", f"{R}/data")),
    Case("check-channel-mismatch", "check", "one RGB image among grey ones", _channel_mismatch, 1,
         ("mixed_channels", "[1, 3]"), args=("check", f"{R}/data")),
    Case("check-mask-0-255", "check", "masks saved as 0/255", _mask_255, 1,
         ("mask_0_255", "--mask-threshold"), args=("check", f"{R}/data")),
    Case("check-mask-rgb-no-table", "check", "RGB-coded masks without a colour table (real Dubai tiles)",
         _mask_rgb, 1, ("rgb_mask_no_table", "--colour-table"), args=("check", f"{R}/data")),
    Case("check-mask-soft-edges", "check", "anti-aliased (soft-edged) masks", _mask_soft, 1, ("soft_mask", "--mask-threshold 128"),
         args=("check", f"{R}/data")),
    Case("check-mask-outside-classes", "check", "mask value 7 with --classes bg,cell", _mask_out_of_range, 1,
         ("grey_levels", "{0, 1, 7}", "--value-map"), args=("check", f"{R}/data", "--classes", "bg,cell")),
    Case("check-nifti-truncated", "check", "truncated .nii.gz label (real hippocampus)",
         lambda ws: _volumes(ws, label_bytes=hippo_bytes()[:900]), 1, ("hippocampus_003.nii.gz", "unreadable"),
         args=("check", f"{R}/vol")),
    Case("check-nifti-zero-byte", "check", "zero-byte .nii.gz image", lambda ws: _volumes(ws, image_bytes=b""),
         1, ("hippocampus_003.nii.gz", "unreadable"), args=("check", f"{R}/vol")),
    Case("check-volume-shape-mismatch", "check", "label volume of another shape", _volume_shape_mismatch, 1,
         ("hippocampus_003",), args=("check", f"{R}/vol")),
    Case("check-max-samples-zero", "check", "--max-samples 0", isbi_pairs, 1,
         ("--max-samples", "at least 1"), args=("check", f"{R}/data", "--max-samples", "0")),
    Case("check-max-samples-text", "check", "--max-samples abc", isbi_pairs, 2,
         ("--max-samples", "invalid int value"), args=("check", f"{R}/data", "--max-samples", "abc")),
    # train: arguments are checked before any data is read (the data folder does not even exist)
    Case("train-time-budget-text", "train", "--time-budget abc", _nothing, 1, ("cannot read duration 'abc'",),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--time-budget", "abc"), subprocess=True),
    Case("train-time-budget-negative", "train", "--time-budget -5m", _nothing, 1, ("cannot read duration '-5m'",),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--time-budget=-5m")),
    Case("train-set-wrong-type", "train", "--set train.lr=abc", _nothing, 1, ("train.lr", "expected float", "abc"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--set", "train.lr=abc"), subprocess=True),
    Case("train-set-unknown-field", "train", "--set train.learning_rate=1e-3", _nothing, 1,
         ("learning_rate", "unknown TrainConfig field"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--set", "train.learning_rate=1e-3")),
    Case("train-set-unknown-section", "train", "--set optim.lr=1e-3", _nothing, 1,
         ("unknown plan section 'optim'",), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--set", "optim.lr=1")),
    Case("train-set-negative-batch", "train", "--set train.batch_size=-4", _nothing, 1,
         ("train.batch_size", "at least 1", "-4"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--set", "train.batch_size=-4")),
    Case("train-set-overlap-one", "train", "--set infer.overlap=1.5", _nothing, 1, ("infer.overlap", "[0, 1)"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--set", "infer.overlap=1.5")),
    Case("train-set-malformed", "train", "--set lr (no section, no value)", _nothing, 1,
         ("override 'lr'", "section.field=value"), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--set", "lr")),
    Case("train-folds-one", "train", "--folds 1 --fold 0", _nothing, 1, ("--folds must be at least 2",),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--folds", "1", "--fold", "0")),
    Case("train-fold-out-of-range", "train", "--folds 3 --fold 7", _nothing, 1, ("--fold", "0..2", "'7'"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--folds", "3", "--fold", "7")),
    Case("train-plan-not-yaml", "train", "--plan file with a YAML syntax error", _write("bad.yaml", b"train: [1, 2\n"),
         1, ("bad.yaml", "plan is not valid YAML"), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--plan", f"{R}/bad.yaml")),
    Case("train-plan-wrong-type", "train", "--plan file with train.steps: many",
         _write("plan.yaml", b"train:\n  steps: many\n"), 1, ("plan.yaml", "train.steps", "expected int"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--plan", f"{R}/plan.yaml")),
    Case("train-plan-hostile-pickle", "train", "--plan file holding a pickle payload",
         _write("evil.yaml", hostile_pickle), 1, ("evil.yaml", "plan"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--plan", f"{R}/evil.yaml")),
    Case("train-empty-dataset", "train", "training on an empty folder", _seq(lambda ws: ws.p("data/.keep").write_text("")),
         1, ("data", "empty"), args=("train", f"{R}/data", "--out", f"{R}/run")),
    Case("train-existing-run", "train", "--out is an existing run, no --overwrite/--resume",
         _seq(isbi_pairs, _run_path), 1, ("run", "already exists", "--overwrite"),
         args=("train", f"{R}/data", "--out", f"{R}/run", "--set", "train.steps=1")),
    Case("train-resume-nothing", "train", "--resume a folder without plan.yaml", _nothing, 1, ("plan.yaml",),
         args=("train", f"{R}/nodata", "--out", f"{R}/norun", "--resume")),
    Case("train-resume-no-state", "train", "--resume a run without state.json", _run_state, 1,
         ("cannot resume", "state.json not found"), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--resume")),
    Case("train-resume-corrupt-state", "train", "--resume with a state.json cut short",
         _seq(_run_state, _write("run/state.json", b'{"scalars": {"step": 3}, "tens')), 1,
         ("state.json", "unetkit training state"), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--resume")),
    Case("train-resume-hostile-state", "train", "--resume with state.json and state tensors holding pickles",
         _seq(_run_state, _write("run/state.json", hostile_pickle), _write("run/state.safetensors.3", hostile_pickle)),
         1, ("state.json", "unetkit training state"), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--resume")),
    Case("train-resume-hostile-tensors", "train", "--resume where state.safetensors.N is a pickle",
         _seq(_run_state, _write("run/state.json", b'{"scalars": {"step": 3}, "tensors": "state.safetensors.3"}'),
              _write("run/state.safetensors.3", hostile_pickle)), 1,
         ("state.safetensors.3", "unreadable safetensors"), args=("train", f"{R}/nodata", "--out", f"{R}/run", "--resume")),
    Case("train-resume-escaping-state", "train", "--resume where state.json names a file outside the run",
         _seq(_run_state, _write("run/state.json", b'{"scalars": {"step": 3}, "tensors": "../evil.pt"}'),
              lambda ws: hostile_torch_file(ws, "evil.pt")), 1, ("state.json", "../evil.pt"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--resume")),
    # predict
    Case("predict-missing-run", "predict", "run folder does not exist", _nothing, 1, ("norun",),
         args=("predict", f"{R}/norun", f"{R}/in", "--out", f"{R}/out")),
    Case("predict-run-without-best", "predict", "run folder without best/", _with_run(lambda ws: _rmtree(ws, "run/best")),
         1, ("config.json", "not found"), args=("predict", f"{R}/run", f"{R}/run/plan.yaml", "--out", f"{R}/out")),
    Case("predict-run-corrupt-config", "predict", "best/config.json is not JSON",
         _with_run(_write("run/best/config.json", b"{not json")), 1, ("config.json", "model config is not valid JSON"),
         args=("predict", f"{R}/run", f"{R}/run/plan.yaml", "--out", f"{R}/out")),
    Case("predict-run-hostile-config", "predict", "best/config.json holds a pickle payload",
         _with_run(_write("run/best/config.json", hostile_pickle)), 1, ("config.json", "model config is not UTF-8"),
         args=("predict", f"{R}/run", f"{R}/run/plan.yaml", "--out", f"{R}/out")),
    Case("predict-run-hostile-weights", "predict", "best/model.safetensors holds a pickle payload",
         _with_run(_write("run/best/model.safetensors", hostile_pickle)), 1,
         ("model.safetensors", "unreadable safetensors"),
         args=("predict", f"{R}/run", f"{R}/run/plan.yaml", "--out", f"{R}/out"), subprocess=True),
    Case("predict-run-hostile-plan", "predict", "plan.yaml holds a pickle payload",
         _with_run(_write("run/plan.yaml", hostile_pickle)), 1, ("plan.yaml", "plan"),
         args=("predict", f"{R}/run", f"{R}/run/best/config.json", "--out", f"{R}/out")),
    Case("predict-run-malformed-plan", "predict", "plan.yaml with an unknown field",
         _with_run(_write("run/plan.yaml", b"infer:\n  tiles: 3\n")), 1, ("plan.yaml", "tiles", "unknown InferConfig"),
         args=("predict", f"{R}/run", f"{R}/run/best/config.json", "--out", f"{R}/out")),
    Case("predict-hostile-files-ignored", "predict", ".pt/.pth/.ckpt/.bin/.pkl payloads beside a valid checkpoint",
         _hostile_weights_beside, 0, ("slice.png ->",), args=("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out",
                                                               "--sequential", "--no-overlay"),
         creates=("out/slice.png",)),
    Case("predict-zero-byte", "predict", "zero-byte PNG", _with_run(_write("in/empty.png", b"")), 1,
         ("unetkit predict: {root}/in/empty.png: unreadable image",), args=("predict", f"{R}/run", f"{R}/in/empty.png", "--out", f"{R}/out"),
         subprocess=True),
    Case("predict-truncated-png", "predict", "PNG cut in half (real ISBI slice)",
         _with_run(_write("in/half.png", lambda ws: isbi_bytes()[: len(isbi_bytes()) // 2])), 1,
         ("half.png", "unreadable image"), args=("predict", f"{R}/run", f"{R}/in/half.png", "--out", f"{R}/out")),
    Case("predict-text-as-png", "predict", "a text file named .png", _with_run(_write("in/notes.png", b"hello\n")), 1,
         ("notes.png", "unreadable image"), args=("predict", f"{R}/run", f"{R}/in/notes.png", "--out", f"{R}/out")),
    Case("predict-png-as-nifti", "predict", "a PNG named .nii.gz", _with_run(_write("in/scan.nii.gz", lambda ws: isbi_bytes())),
         1, ("scan.nii.gz", "unreadable image"), args=("predict", f"{R}/run", f"{R}/in/scan.nii.gz", "--out", f"{R}/out")),
    Case("predict-unsupported-suffix", "predict", "a .txt input", _with_run(_write("in/readme.txt", b"x")), 1,
         ("readme.txt", "unsupported image type"), args=("predict", f"{R}/run", f"{R}/in/readme.txt", "--out", f"{R}/out")),
    Case("predict-truncated-tiff", "predict", "TIFF cut to a third (real DRIVE image)", _truncated_tif, 1,
         ("cut.tif", "unreadable image"), args=("predict", f"{R}/run", f"{R}/in/cut.tif", "--out", f"{R}/out")),
    Case("predict-decompression-bomb", "predict", "PNG header declaring 60000x60000 (refused before allocating)",
         _bomb, 1, ("huge.png", "too large", "--windowed"),
         args=("predict", f"{R}/run", f"{R}/in/huge.png", "--out", f"{R}/out"), subprocess=True, max_memory_mb=1500),
    Case("predict-decompression-bomb-16bit", "predict", "16-bit RGB PNG header declaring 60000x60000", _bomb16, 1,
         ("huge16.png", "too large", "--windowed"),
         args=("predict", f"{R}/run", f"{R}/in/huge16.png", "--out", f"{R}/out"), max_memory_mb=64),
    Case("predict-channel-mismatch", "predict", "RGB JPEG into a 1-channel model (real Dubai tile)", _rgb_to_grey_model,
         1, ("colour.jpg", "1 channel", "3"), args=("predict", f"{R}/run", f"{R}/in/colour.jpg", "--out", f"{R}/out")),
    Case("predict-uint16", "predict", "16-bit grey PNG (accepted)", _uint16, 0, ("deep.png ->", "deep.png"),
         args=("predict", f"{R}/run", f"{R}/in/deep.png", "--out", f"{R}/out", "--no-overlay"),
         creates=("out/deep.png",)),
    Case("predict-float-tiff", "predict", "float32 TIFF (accepted)", _float_tif, 0, ("float.tif ->",),
         args=("predict", f"{R}/run", f"{R}/in/float.tif", "--out", f"{R}/out", "--no-overlay"),
         creates=("out/float.tif",)),
    Case("predict-1x1", "predict", "1x1 image (accepted, padded to a tile)", _one_pixel, 0, ("dot.png ->",),
         args=("predict", f"{R}/run", f"{R}/in/dot.png", "--out", f"{R}/out"),
         creates=("out/dot.png", "out/dot_overlay.png")),
    Case("predict-missing-input", "predict", "input path does not exist", _with_run(), 1,
         ("nothing.png", "no such file"), args=("predict", f"{R}/run", f"{R}/nothing.png", "--out", f"{R}/out")),
    Case("predict-empty-folder", "predict", "input folder without images", _with_run(_write("in/notes.txt", b"x")), 1,
         ("no images found",), args=("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out")),
    Case("predict-threads-zero", "predict", "--threads 0", _with_run(), 1, ("--threads must be at least 1",),
         args=("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out", "--threads", "0")),
    Case("predict-overlap-text", "predict", "--overlap abc", _with_run(), 2, ("--overlap", "invalid float value"),
         args=("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out", "--overlap", "abc")),
    Case("predict-overlap-negative", "predict", "--overlap -0.5", _with_run(_png("in/a.png", isbi_image)), 1,
         ("overlap", "-0.5"), args=("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out", "--overlap", "-0.5")),
    Case("predict-missing-onnx", "predict", "--onnx file does not exist", _with_run(_png("in/a.png", isbi_image)), 1,
         ("missing.onnx",), args=("predict", f"{R}/run", f"{R}/in", "--out", f"{R}/out", "--onnx", f"{R}/missing.onnx")),
    # evaluate
    Case("evaluate-empty-data", "evaluate", "labelled folder without images",
         _with_run(_write("data/.keep", b"")), 1, ("data", "empty"),
         args=("evaluate", f"{R}/run", f"{R}/data", "--out", f"{R}/eval")),
    Case("evaluate-missing-run", "evaluate", "run folder does not exist", isbi_pairs, 1, ("norun",),
         args=("evaluate", f"{R}/norun", f"{R}/data")),
    Case("evaluate-hostile-plan", "evaluate", "plan.yaml holds a pickle payload",
         _seq(isbi_pairs, _with_run(_write("run/plan.yaml", hostile_pickle))), 1, ("plan.yaml", "plan"),
         args=("evaluate", f"{R}/run", f"{R}/data", "--out", f"{R}/eval")),
    # export
    Case("export-wrong-suffix", "export", "--out model.txt", _with_run(), 1, ("--out must end in .onnx", "model.txt"),
         args=("export", f"{R}/run", "--out", f"{R}/model.txt")),
    Case("export-missing-run", "export", "run folder does not exist", _nothing, 1, ("norun",),
         args=("export", f"{R}/norun", "--out", f"{R}/model.onnx")),
    Case("export-hostile-weights", "export", "best/model.safetensors holds a pickle payload",
         _with_run(_write("run/best/model.safetensors", hostile_pickle)), 1, ("model.safetensors", "unreadable safetensors"),
         args=("export", f"{R}/run", "--out", f"{R}/model.onnx")),
    Case("export-truncated-weights", "export", "best/model.safetensors cut short",
         _with_run(lambda ws: _truncate(ws, "run/best/model.safetensors")), 1,
         ("model.safetensors", "unreadable safetensors"), args=("export", f"{R}/run", "--out", f"{R}/model.onnx")),
    # serve: the command's argument checks (no server starts) and the app's request handling
    Case("serve-port-out-of-range", "serve", "--port 70000", _with_run(), 1, ("--port", "70000"),
         args=("serve", f"{R}/run", "--port", "70000")),
    Case("serve-max-batch-zero", "serve", "--max-batch 0", _with_run(), 1, ("--max-batch",),
         args=("serve", f"{R}/run", "--max-batch", "0")),
    Case("serve-missing-run", "serve", "run folder does not exist", _nothing, 1, ("norun",),
         args=("serve", f"{R}/norun", "--port", "0")),
    Case("serve-app-empty-body", "serve-app", "POST /predict with an empty body", _nothing, 400, ("empty upload",),
         call=_post(b"")),
    Case("serve-app-truncated-png", "serve-app", "POST /predict, PNG cut in half", _nothing, 400, ("unreadable image",),
         call=_post(lambda ws: isbi_bytes()[: len(isbi_bytes()) // 2])),
    Case("serve-app-bomb", "serve-app", "POST /predict, PNG header declaring 60000x60000", _nothing, 413,
         ("too large", "limit"), call=_post(bomb_png(60000, 60000)), max_memory_mb=64),
    Case("serve-app-pickle-body", "serve-app", "POST /predict with a pickle payload as the body", _nothing, 415,
         ("unsupported upload",), call=_post(hostile_pickle)),
    Case("serve-app-unknown-query", "serve-app", "POST /predict?tiles=3", _nothing, 400,
         ("unknown query parameter", "tiles"), call=_post(lambda ws: isbi_bytes(), query="?tiles=3")),
    Case("serve-app-unknown-format", "serve-app", "POST /predict?format=gif", _nothing, 400,
         ("unknown format 'gif'",), call=_post(lambda ws: isbi_bytes(), query="?format=gif")),
    Case("serve-app-multipart-no-file", "serve-app", "multipart form without a file field", _nothing, 400,
         ("no file",), call=_post(b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                                  content_type="multipart/form-data; boundary=b")),
    # the Python API
    Case("api-read-bomb", "api", "read_image on a PNG declaring 60000x60000", _write("huge.png", bomb_png(60000, 60000)),
         1, ("ValueError", "huge.png", "too large", "--windowed"), call=_api(_read_image("huge.png")), max_memory_mb=16),
    Case("api-read-tiff-bomb", "api", "read_image on a TIFF whose header declares 300000x300000 (refused before allocating)",
         _write("huge.tif", lambda ws: bomb_tiff(300000, 300000)), 1,
         ("ValueError", "huge.tif", "too large", "300000x300000", "--windowed"), call=_api(_read_image("huge.tif")),
         max_memory_mb=16),
    Case("api-read-zero-byte-nifti", "api", "read_image on a zero-byte .nii.gz", _write("v.nii.gz", b""), 1,
         ("ValueError", "v.nii.gz", "unreadable image"), call=_api(_read_image("v.nii.gz"))),
    Case("api-read-truncated-nii", "api", "read_image on an uncompressed .nii cut short (real hippocampus)",
         _write("cut.nii", lambda ws: gzip.decompress(hippo_bytes())[:20000]), 1,
         ("ValueError", "cut.nii", "unreadable image"), call=_api(_read_image("cut.nii")), max_memory_mb=64),
    Case("api-load-model-hostile-config", "api", "load_model where config.json is a pickle",
         _with_run(_write("run/best/config.json", hostile_pickle)), 1, ("UntrustedFileError", "config.json", "model config is not"),
         call=_api(_load_model)),
    Case("api-load-model-missing-weights", "api", "load_model without model.safetensors",
         _with_run(lambda ws: (ws.root / "run/best/model.safetensors").unlink()), 1,
         ("FileNotFoundError", "model.safetensors", "not found"), call=_api(_load_model)),
    Case("api-encoder-weights-hostile-pt", "api", "create_model(encoder_weights=evil.pt), torch.save of a payload",
         lambda ws: hostile_torch_file(ws, "evil.pt"), 1, ("ValueError", "evil.pt", "refused to load"),
         call=_api(_encoder_weights("evil.pt"))),
    Case("api-encoder-weights-hostile-pth", "api", "create_model(encoder_weights=evil.pth), a raw pickle",
         _write("evil.pth", hostile_pickle), 1, ("ValueError", "evil.pth"), call=_api(_encoder_weights("evil.pth"))),
    Case("api-encoder-weights-hostile-ckpt", "api", "create_model(encoder_weights=evil.ckpt)",
         lambda ws: hostile_torch_file(ws, "evil.ckpt"), 1, ("ValueError", "evil.ckpt", "unsupported weights file type"),
         call=_api(_encoder_weights("evil.ckpt"))),
    Case("api-encoder-weights-hostile-safetensors", "api", "create_model(encoder_weights=evil.safetensors), a pickle",
         _write("evil.safetensors", hostile_pickle), 1, ("ValueError", "evil.safetensors", "unreadable safetensors"),
         call=_api(_encoder_weights("evil.safetensors"))),
    Case("api-plan-json-malformed", "api", "Plan.load on broken JSON", _write("plan.json", b'{"train": {"lr": }'), 1,
         ("UntrustedFileError", "plan.json", "plan is not valid JSON"), call=_api(_plan_load("plan.json"))),
    Case("api-plan-not-utf8", "api", "Plan.load on binary bytes", _write("plan.yaml", bytes(range(256))), 1,
         ("UntrustedFileError", "plan.yaml", "not UTF-8"), call=_api(_plan_load("plan.yaml"))),
    Case("api-predictor-plan-list", "api", "Predictor.from_run where plan.yaml is a list",
         _with_run(_write("run/plan.yaml", b"- 1\n- 2\n")), 1, ("ValueError", "plan.yaml", "not a plan"),
         call=_api(_predictor_from_run)),
    # files handed over (issue 31): plans, ONNX graphs, checkpoint JSON
    Case("train-plan-alias-bomb", "train", "--plan with YAML aliases expanding to 4e9 nodes (billion laughs)",
         _write("laughs.yaml", alias_bomb_plan()), 1, ("laughs.yaml", "YAML aliases", "over the limit"),
         # peak RSS of the whole process: the training stack's imports alone take ~1.1 GB; the expanded plan would
         # take hundreds of GB
         args=_train_plan("laughs.yaml"), subprocess=True, max_memory_mb=2048),
    Case("train-plan-recursive-alias", "train", "--plan with an alias inside the node it names",
         _write("loop.yaml", b"train: &t\n  labels_keys: [*t]\n"), 1, ("loop.yaml", "alias inside the node it names"),
         args=_train_plan("loop.yaml")),
    Case("train-plan-too-deep", "train", "--plan JSON nested 200 levels",
         _write("deep.json", deep_json(200)), 1, ("deep.json", "plan nests", "over the limit of 16"),
         args=_train_plan("deep.json")),
    Case("train-plan-too-large", "train", "--plan file of 9 MiB",
         _write("big.yaml", b"# " + b"x" * (9 * 2**20) + b"\n"), 1, ("big.yaml", "over the 8 MiB limit"),
         args=_train_plan("big.yaml")),
    Case("train-plan-python-tag", "train", "--plan with a !!python/object tag",
         _write("tag.yaml", b"train: !!python/object/apply:os.system [touch PWNED]\n"), 1,
         ("tag.yaml", "not valid YAML", "python/object"), args=_train_plan("tag.yaml")),
    Case("train-plan-nan", "train", "--plan with infer.shift: [.nan]", _write("nan.yaml", b"infer:\n  shift: [.nan, 0]\n"),
         1, ("nan.yaml", "infer.shift", "finite number"), args=_train_plan("nan.yaml")),
    Case("train-plan-inf", "train", "--plan with train.ema: .inf", _write("inf.yaml", b"train:\n  ema: .inf\n"),
         1, ("inf.yaml", "train.ema", "finite number"), args=_train_plan("inf.yaml")),
    Case("train-plan-huge-int", "train", "--plan with train.steps: 10**30",
         _write("steps.yaml", b"train:\n  steps: 1000000000000000000000000000000\n"), 1,
         ("steps.yaml", "train.steps", "out of range"), args=_train_plan("steps.yaml")),
    Case("train-plan-5000-digits", "train", "--plan with a 5000-digit integer",
         _write("digits.json", b'{"train": {"steps": ' + b"9" * 5000 + b"}}"), 1,
         ("digits.json", "not usable JSON", "4300 digits"), args=_train_plan("digits.json")),
    Case("train-plan-wrong-section-type", "train", "--plan where infer is a list", _write("list.yaml", b"infer: [1, 2]\n"),
         1, ("list.yaml", "'infer' must be a mapping"), args=_train_plan("list.yaml")),
    Case("train-resume-deep-state", "train", "--resume with a state.json nested 200 levels",
         _seq(_run_state, _write("run/state.json", deep_json(200, key="scalars"))), 1,
         ("state.json", "unetkit training state nests"),
         args=("train", f"{R}/nodata", "--out", f"{R}/run", "--resume")),
    Case("predict-onnx-corrupt", "predict", "--onnx graph with its first 64 bytes inverted",
         _broken_graph("model.onnx", _corrupt), 1, ("model.onnx", "not an ONNX model", "corrupt"),
         args=_predict_onnx("model.onnx"), subprocess=True),
    Case("predict-onnx-truncated", "predict", "--onnx graph cut in half",
         _broken_graph("model.onnx", lambda d: d[: len(d) // 2]), 1, ("model.onnx", "not an ONNX model", "truncated"),
         args=_predict_onnx("model.onnx")),
    Case("predict-onnx-empty", "predict", "--onnx zero-byte file", _broken_graph("model.onnx", lambda d: b""), 1,
         ("model.onnx", "no graph nodes"), args=_predict_onnx("model.onnx")),
    Case("predict-onnx-png", "predict", "--onnx a PNG renamed model.onnx (real ISBI slice)",
         _broken_graph("model.onnx", lambda d: isbi_bytes()), 1, ("model.onnx", "not an ONNX model"),
         args=_predict_onnx("model.onnx")),
    Case("predict-onnx-external-outside", "predict", "--onnx graph whose weights are '../outside.bin'",
         _external_graph("../outside.bin"), 1, ("model.onnx", "'../outside.bin'", "leads outside"),
         args=_predict_onnx("models/model.onnx")),
    Case("predict-onnx-external-absolute", "predict", "--onnx graph whose weights are an absolute path",
         _external_graph("/etc/passwd", data_rel="models/unused.bin"), 1, ("model.onnx", "'/etc/passwd'", "absolute"),
         args=_predict_onnx("models/model.onnx")),
    Case("predict-onnx-external-missing", "predict", "--onnx graph whose external weights file is missing",
         _external_graph("missing.bin"), 1, ("model.onnx", "'missing.bin'", "not found"),
         args=_predict_onnx("models/model.onnx")),
    Case("predict-onnx-external-beside", "predict", "--onnx graph with its weights in a file beside it (accepted)",
         _external_graph("weights.bin"), 0, ("a.png ->",), args=_predict_onnx("models/model.onnx"),
         creates=("out/*",)),
    Case("predict-onnx-wrong-channels", "predict", "--onnx graph taking 3 channels, run has 1",
         _graph("model.onnx", channels=3), 1, ("model.onnx", "3 input channel(s)", "has 1"),
         args=_predict_onnx("model.onnx")),
    Case("predict-onnx-wrong-input", "predict", "--onnx graph whose input is not named 'image'",
         _broken_graph("model.onnx", lambda d: d.replace(b"image", b"input")), 1,
         ("model.onnx", "input 'image'", "['input']"), args=_predict_onnx("model.onnx")),
    Case("predict-onnx-foreign-producer", "predict", "--onnx graph from an unknown producer (warned, run)",
         _graph("model.onnx", producer="somebody"), 0, ("warning", "model.onnx", "written by 'somebody'"),
         args=_predict_onnx("model.onnx"), creates=("out/*",), subprocess=True),
    Case("predict-onnx-corrupt-report", "predict", "--onnx graph beside a model.onnx.json that is not JSON",
         _seq(_graph("model.onnx"), _write("model.onnx.json", b"{weights")), 1,
         ("model.onnx.json", "export report is not valid JSON"), args=_predict_onnx("model.onnx")),
    Case("evaluate-onnx-wrong-classes", "evaluate", "--onnx graph with 5 classes, run has 2",
         _seq(isbi_pairs, _graph("model.onnx", classes=5)), 1, ("model.onnx", "5 output class(es)", "has 2"),
         args=("evaluate", f"{R}/run", f"{R}/data", "--out", f"{R}/eval", "--onnx", f"{R}/model.onnx")),
    Case("serve-onnx-truncated", "serve", "--onnx graph cut to 100 bytes",
         _broken_graph("model.onnx", lambda d: d[:100]), 1, ("model.onnx", "not an ONNX model"),
         args=("serve", f"{R}/run", "--port", "0", "--onnx", f"{R}/model.onnx")),
    Case("predict-config-too-deep", "predict", "best/config.json nested 200 levels",
         _with_run(_write("run/best/config.json", deep_json(200))), 1, ("config.json", "model config nests"),
         args=("predict", f"{R}/run", f"{R}/run/plan.yaml", "--out", f"{R}/out")),
    Case("predict-config-list", "predict", "best/config.json is a JSON list",
         _with_run(_write("run/best/config.json", b"[1, 2]")), 1, ("config.json", "a JSON list, expected an object"),
         args=("predict", f"{R}/run", f"{R}/run/plan.yaml", "--out", f"{R}/out")),
    Case("api-load-model-nan-kwarg", "api", "load_model where config.json's dropout is NaN",
         _config_kwarg(dropout=float("nan")), 1, ("ValueError", "config.json", "model.kwargs.dropout", "finite"),
         call=_api(_load_model)),
    Case("api-load-model-huge-width", "api", "load_model where config.json's width is 2**60",
         _config_kwarg(width=2**60), 1, ("ValueError", "config.json", "model.kwargs.width", "out of range"),
         call=_api(_load_model)),
    Case("api-model-folder-plan-not-mapping", "api", "Predictor.from_run on a model folder whose config.json plan is a string",
         _with_run(lambda ws: _plan_in_config(ws, "oops")), 1, ("ValueError", "config.json", "its plan is invalid"),
         call=_api(lambda ws: __import__("unetkit.infer.predictor", fromlist=["Predictor"]).Predictor.from_run(
             ws.root / "run" / "best", fast=False))),
]


def _rmtree(ws: Workspace, rel: str) -> None:
    import shutil

    shutil.rmtree(ws.root / rel)


def _plan_in_config(ws: Workspace, plan: object) -> None:
    import json

    path = ws.root / "run" / "best" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "plan": plan}))


def _truncate(ws: Workspace, rel: str) -> None:
    path = ws.root / rel
    path.write_bytes(path.read_bytes()[:200])



# -- annotation exports (COCO, CVAT, Label Studio, GIS vectors), made from real ISBI pixels --------------------
def _coco(categories: object, annotations: list[dict]):  # type: ignore[no-untyped-def]
    def build(ws: Workspace) -> None:
        import json

        isbi_pairs(ws)
        images = [{"id": i, "file_name": f"images/{i}.png", "height": 96, "width": 96} for i in range(3)]
        ws.p("data/coco.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                      "categories": categories}))  # fmt: skip

    return build


def _cvat_missing_colour(ws: Workspace) -> None:
    isbi_pairs(ws)
    ws.p("cvat/labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nmembrane:250,50,83::\n")
    mask = np.zeros((96, 96, 3), np.uint8)
    mask[:8, :8] = (1, 2, 3)
    save_png(ws.p("cvat/SegmentationClass/0.png"), mask)


def _vector_without_crs(ws: Workspace) -> None:
    import warnings

    import pyogrio.raw
    import rasterio
    import shapely
    from affine import Affine

    with rasterio.open(ws.p("scenes/a.tif"), "w", driver="GTiff", width=96, height=96, count=1, dtype="uint8",
                       crs="EPSG:32640", transform=Affine(0.5, 0, 300000.0, 0, -0.5, 2790000.0)) as ds:  # fmt: skip
        ds.write(isbi_image()[None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pyogrio.raw.write(ws.p("scenes/a.shp"), np.array([shapely.to_wkb(shapely.box(300001, 2789970, 300020, 2789990))],
                          dtype=object), field_data=[], fields=[], crs=None, driver="ESRI Shapefile",
                          geometry_type="Polygon")  # fmt: skip


def _zip_slip(ws: Workspace) -> None:
    import zipfile

    with zipfile.ZipFile(ws.p("export.zip"), "w") as z:
        z.writestr("labelmap.txt", "background:0,0,0::\n")
        z.writestr("../escaped.txt", "x")


CASES += [
    Case("coco-unknown-category", "check", "COCO annotation with a category id not in 'categories'",
         _coco([{"id": 1, "name": "membrane"}], [{"id": 5, "image_id": 0, "category_id": 9,
                                                  "segmentation": [[0, 0, 9, 0, 9, 9]]}]),  # fmt: skip
         1, ("unknown_category", "coco.json", "category id(s) not in 'categories': 9"), args=("check", f"{R}/data/coco.json")),
    Case("coco-bad-categories", "train", "COCO file whose 'categories' is not a list", _coco(5, []), 1,
         ("coco.json", "'categories' must be a list"), args=("train", f"{R}/data/coco.json", "--out", f"{R}/run")),
    Case("cvat-colour-not-in-labelmap", "check", "CVAT mask colour missing from labelmap.txt", _cvat_missing_colour, 1,
         ("unknown_colours", "0.png", "#010203"), args=("check", f"{R}/cvat", "--image-dir", f"{R}/data/images")),
    Case("vector-labels-without-crs", "check", "shapefile labels without a .prj (no CRS)", _vector_without_crs, 1,
         ("a.shp", "has no CRS"), args=("check", f"{R}/scenes")),
    Case("cvat-xml-entities", "check", "XML with an entity declaration (billion laughs)",
         _write("data/annotations.xml", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><annotations>&x;</annotations>'),
         1, ("annotations.xml", "DOCTYPE/ENTITY"), args=("check", f"{R}/data/annotations.xml")),
    Case("zip-export-escaping", "check", "export zip with a member outside its folder (../)", _zip_slip, 1,
         ("export.zip", "unsafe member name"), args=("check", f"{R}/export.zip")),
]

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"

__all__ = ["CASES", "bomb_png", "hostile_pickle", "hostile_torch_file"]
