"""Fuzz targets shared by the bounded CI tests (``test_fuzz_readers.py``) and ``benchmarks/fuzz.py`` (long runs).

Each target is a hypothesis strategy plus a function that feeds one drawn example to unetkit and fails only when
an *undocumented* exception escapes. The documented errors are what the readers' and loaders' docstrings list and
what ``unetkit.cli.main`` turns into a one-line message: ``ValueError`` (unreadable / unsupported / malformed,
including ``MaskEncodingError``) and ``OSError`` (missing files, I/O). Anything else (IndexError, TypeError,
MemoryError, struct.error, a C-level crash ...) is a bug: the CLI would print a traceback for it.

The inputs are real files from ``../shared/datasets`` (PNG, JPEG, GIF, plain TIFF, NIfTI, and a GeoTIFF written from
real pixels), mutated: bytes flipped, the file cut short, 32-bit header fields overwritten (the width / height /
dimension fields sit in the first few hundred bytes of every format used here).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
DOCUMENTED = (ValueError, OSError)

# Small enough that a mutated header declaring gigabytes is refused quickly instead of decoded.
FUZZ_DECODE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy
    run: Callable[..., None]


# -- mutations ---------------------------------------------------------------------------------------------
@st.composite
def mutations(draw: st.DrawFn) -> list[tuple]:
    """A short list of edits: ('flip', pos, byte) / ('cut', fraction) / ('int', pos, value, little_endian)."""
    edit = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(0, 255)),
        st.tuples(st.just("cut"), st.floats(0.0, 1.0)),
        st.tuples(st.just("int"), st.integers(0, 511), st.sampled_from([0, 1, 2, 255, 65535, 60000, 2**31 - 1, 2**32 - 1]),
                  st.booleans()),
        st.tuples(st.just("head"), st.integers(0, 511), st.binary(min_size=1, max_size=8)),
    )
    return draw(st.lists(edit, min_size=1, max_size=6))


def mutate(data: bytes, edits: list[tuple]) -> bytes:
    buf = bytearray(data)
    for edit in edits:
        if not buf:
            break
        kind = edit[0]
        if kind == "flip":
            buf[edit[1] % len(buf)] ^= edit[2] or 1
        elif kind == "cut":
            del buf[int(len(buf) * edit[1]):]
        elif kind == "int":
            raw = int(edit[2]).to_bytes(4, "little" if edit[3] else "big")
            pos = edit[1] % max(1, len(buf) - 4)
            buf[pos : pos + 4] = raw
        else:
            pos = edit[1] % len(buf)
            buf[pos : pos + len(edit[2])] = edit[2]
    return bytes(buf)


# -- real seed files ---------------------------------------------------------------------------------------
_SEEDS: dict[str, bytes] = {}


def seeds() -> dict[str, bytes]:
    """suffix-tagged name -> bytes of a small real file of each format (made once per process)."""
    if _SEEDS:
        return _SEEDS
    from PIL import Image

    isbi = DATASETS / "isbi2012_em_membrane"
    crop = _pixels(isbi / "images" / "3.png")[:64, :64]
    tmp = Path(tempfile.mkdtemp(prefix="unetkit-fuzz-seeds-"))
    Image.fromarray(crop).save(tmp / "isbi.png")
    Image.fromarray(crop.astype(np.uint16) * 257).save(tmp / "deep.png")
    dubai = DATASETS / "dubai_aerial_landcover"
    Image.fromarray(_pixels(dubai / "images" / "tile_1" / "image_part_001.jpg")[:64, :64]).save(tmp / "dubai.jpg")
    Image.fromarray(_pixels(dubai / "masks" / "tile_1" / "image_part_001.png")[:64, :64]).save(tmp / "dubai_mask.png")
    drive = DATASETS / "drive_retina_vessels" / "training"
    Image.fromarray(_pixels(drive / "1st_manual" / "21_manual1.gif")[:64, :64]).save(tmp / "vessels.gif")
    import tifffile

    rgb = _pixels(drive / "images" / "21_training.tif")[:64, :64]
    tifffile.imwrite(tmp / "drive.tif", rgb, photometric="rgb", compression="zlib")
    hippo = gzip.decompress((DATASETS / "msd_task04_hippocampus" / "images" / "hippocampus_001.nii.gz").read_bytes())
    (tmp / "hippo.nii").write_bytes(hippo)
    (tmp / "hippo.nii.gz").write_bytes(gzip.compress(hippo))
    from unetkit.data.io import write_image

    try:  # a GeoTIFF needs rasterio (the geo extra)
        import rasterio  # noqa: F401
        from affine import Affine

        transform = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2800000.0)
        write_image(tmp / "geo.tif", np.moveaxis(rgb, -1, 0), meta={"crs": "EPSG:32640", "transform": transform})
    except ImportError:
        pass
    for path in sorted(tmp.iterdir()):
        _SEEDS[path.name] = path.read_bytes()
    return _SEEDS


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB") if im.mode == "P" else im)


def _suffix(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _written(name: str, data: bytes, folder: Path) -> Path:
    path = folder / f"fuzz{_suffix(name)}"
    path.write_bytes(data)
    return path


def _documented(fn: Callable[[], object]) -> None:
    try:
        fn()
    except DOCUMENTED:
        pass


# -- targets -----------------------------------------------------------------------------------------------
def run_reader(name: str, edits: list[tuple], window: tuple[int, int, int, int], folder: Path) -> None:
    """read_image, image_shape and a windowed read of a mutated real file: only documented errors."""
    from unetkit.data import _common
    from unetkit.data.io import image_shape, read_image

    data = mutate(seeds()[name], edits)
    path = _written(name, data, folder)
    limit, _common.MAX_DECODE_BYTES = _common.MAX_DECODE_BYTES, FUZZ_DECODE_BYTES
    try:
        _documented(lambda: read_image(path))
        _documented(lambda: image_shape(path))
        if not name.endswith((".nii", ".nii.gz")):
            _documented(lambda: read_image(path, window=window))
    finally:
        _common.MAX_DECODE_BYTES = limit


READER = Target(
    "readers",
    st.tuples(st.sampled_from(sorted(["isbi.png", "deep.png", "dubai.jpg", "dubai_mask.png", "vessels.gif", "drive.tif",
                                      "hippo.nii", "hippo.nii.gz", "geo.tif"])),
              mutations(), st.tuples(st.integers(-2, 70), st.integers(-2, 70), st.integers(-1, 70), st.integers(-1, 70))),
    run_reader,
)


def _mask_config(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    from unetkit.data.options import DataConfig

    kind = draw(st.sampled_from(["none", "threshold", "value_map", "colours"]))
    kwargs: dict = {"ignore_index": draw(st.sampled_from([255, 0, 7, -1]))}
    if kind == "threshold":
        kwargs["mask_threshold"] = draw(st.integers(-5, 300))
    elif kind == "value_map":
        kwargs["value_map"] = draw(st.dictionaries(st.integers(-3, 300), st.integers(-3, 300), max_size=5))
    elif kind == "colours":
        kwargs["colour_table"] = draw(st.dictionaries(st.text("abc", min_size=1, max_size=3),
                                                      st.lists(st.integers(-2, 300), min_size=1, max_size=4), max_size=4))
    kwargs["task"] = draw(st.sampled_from(["binary", "multiclass", "multilabel"]))
    kwargs["classes"] = draw(st.sampled_from([[], ["bg", "fg"], ["a", "b", "c"]]))
    try:
        return DataConfig(**kwargs)
    except DOCUMENTED:
        return None


@st.composite
def mask_examples(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    from hypothesis.extra import numpy as hnp

    source = draw(st.sampled_from(["file", "array"]))
    if source == "file":
        raw = ("file", draw(st.sampled_from(["dubai_mask.png", "vessels.gif", "isbi.png", "drive.tif", "hippo.nii.gz"])),
               draw(mutations()) if draw(st.booleans()) else [])
    else:
        dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]))
        shape = draw(st.sampled_from([(5, 6), (4, 5, 3), (4, 5, 4), (3, 4, 5), (2, 3, 4, 3), (1, 1), (0, 4), (4, 5, 2)]))
        raw = ("array", draw(hnp.arrays(dtype, shape)))
    return raw, _mask_config(draw), draw(st.sampled_from([None, 2, 3]))


def run_mask(example, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """read_mask on mutated real masks, then encode_mask / count_values / infer_mask_encoding on what was read."""
    from unetkit.data._raw import read_mask_array
    from unetkit.data.masks import count_values, encode_mask, infer_mask_encoding

    raw, config, spatial = example
    if raw[0] == "file":
        path = _written(raw[1], mutate(seeds()[raw[1]], raw[2]) if raw[2] else seeds()[raw[1]], folder)
        try:
            array = read_mask_array(path, resolve_palette=raw[1].endswith(".gif"))
        except DOCUMENTED:
            return
    else:
        array = raw[1]
    if config is not None:
        _documented(lambda: encode_mask(array, config, source="fuzz", spatial_ndim=spatial))
    try:
        values, colours = count_values(array, spatial_ndim=spatial)
    except DOCUMENTED:
        return
    _documented(lambda: infer_mask_encoding(values, colours))


MASKS = Target("masks", mask_examples(), run_mask)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8))  # fmt: skip
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                             max_size=3), max_leaves=8)
_FIELDS = {"data": ["root", "in_channels", "spatial_dims", "task", "classes", "value_map", "colour_table", "normalization"],
           "model": ["name", "kwargs", "reason"],
           "train": ["patch_size", "batch_size", "lr", "steps", "time_budget_s", "ema", "loss", "val_fraction"],
           "infer": ["tile_size", "overlap", "tta", "threshold", "shift", "precision"]}


@st.composite
def plan_texts(draw: st.DrawFn) -> tuple[str, bytes]:
    """A plan file: a structured random plan as YAML or JSON, a mutated real plan, or a mutated model config."""
    import yaml

    kind = draw(st.sampled_from(["yaml", "json", "mutated", "config", "override"]))
    if kind in ("yaml", "json"):
        raw: dict = {}
        for section in draw(st.lists(st.sampled_from(list(_FIELDS) + ["format_version", "extra"]), max_size=4)):
            if section in ("format_version", "extra"):
                raw[section] = draw(_VALUES)
                continue
            keys = draw(st.lists(st.sampled_from(_FIELDS[section] + ["bogus"]), max_size=4))
            raw[section] = {k: draw(_VALUES) for k in keys} if draw(st.booleans()) else draw(_VALUES)
        text = json.dumps(raw) if kind == "json" else yaml.safe_dump(raw)
        return ("plan.json" if kind == "json" else "plan.yaml"), text.encode()
    if kind == "override":
        return "override", draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    seed = _real_plan_bytes() if kind == "mutated" else _real_config_bytes()
    return ("plan.yaml" if kind == "mutated" else "config.json"), mutate(seed, draw(mutations()))


def _real_plan_bytes() -> bytes:
    from unetkit.config import Plan

    folder = Path(tempfile.mkdtemp(prefix="unetkit-fuzz-plan-"))
    Plan().save(folder / "plan.yaml")
    return (folder / "plan.yaml").read_bytes()


def _real_config_bytes() -> bytes:
    import unetkit

    folder = Path(tempfile.mkdtemp(prefix="unetkit-fuzz-model-"))
    unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4).save_pretrained(folder)
    return (folder / "config.json").read_bytes()


_MODEL_DIR: dict[str, Path] = {}


def run_plan(example: tuple[str, bytes], folder: Path) -> None:
    """Plan.load / apply_overrides / load_model(config.json): only documented errors."""
    from unetkit.config import Plan, apply_overrides

    name, data = example
    if name == "override":
        _documented(lambda: apply_overrides(Plan(), [data.decode("utf-8", "replace")]))
        return
    if name == "config.json":
        import shutil

        import unetkit

        if "dir" not in _MODEL_DIR:
            _MODEL_DIR["dir"] = Path(tempfile.mkdtemp(prefix="unetkit-fuzz-model-"))
            unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4).save_pretrained(
                _MODEL_DIR["dir"])
        model_dir = folder / "model"
        shutil.copytree(_MODEL_DIR["dir"], model_dir, dirs_exist_ok=True)
        (model_dir / "config.json").write_bytes(data)
        _documented(lambda: unetkit.load_model(model_dir))
        return
    path = folder / name
    path.write_bytes(data)
    _documented(lambda: Plan.load(path))


PLANS = Target("plans", plan_texts(), run_plan)


# -- the service -------------------------------------------------------------------------------------------
_APP: dict[str, object] = {}


def service_client():  # type: ignore[no-untyped-def]
    """A TestClient over the ASGI app of a warmed-up service on a tiny untrained run (made once per process)."""
    if "client" not in _APP:
        import atexit
        import sys

        from starlette.testclient import TestClient

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infer"))
        from _run_factory import make_run

        from unetkit.infer.predictor import Predictor
        from unetkit.serve import Limits, SegmentationService
        from unetkit.serve.app import create_app

        run = make_run(Path(tempfile.mkdtemp(prefix="unetkit-fuzz-run-")) / "run", tile=64, overlap=0.25)
        service = SegmentationService(Predictor.from_run(run, fast=False), run_dir=run,
                                      limits=Limits(max_bytes=2**20, max_pixels=512 * 512, timeout_s=30))
        service.start(warm_up=False)
        service.warm_up()
        _APP.update(client=TestClient(create_app(service)), service=service)
        atexit.register(service.close)
    return _APP["client"]


_CONTENT_TYPES = ["application/octet-stream", "image/png", "image/jpeg", "image/tiff", "application/gzip",
                  "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain", "application/json",
                  "application/x-www-form-urlencoded", "", "image/png; charset=utf-8"]
_QUERY_KEYS = ["format", "tta", "tiles", "x", "format[]", ""]
_QUERY_VALUES = ["mask", "overlay", "json", "gif", "", "MASK", "mask&format=json", "%00", "1"]


@st.composite
def requests(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    kind = draw(st.sampled_from(["real", "mutated", "random", "multipart"]))
    name = draw(st.sampled_from(["isbi.png", "dubai.jpg", "drive.tif", "hippo.nii.gz", "deep.png"]))
    if kind == "random":
        body = draw(st.binary(max_size=2048))
    elif kind == "multipart":
        inner = mutate(seeds()[name], draw(mutations())) if draw(st.booleans()) else seeds()[name]
        field = draw(st.sampled_from(["file", "image", ""]))
        body = (b"--xyz\r\nContent-Disposition: form-data; name=\"" + field.encode() + b"\"; filename=\"a\"\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n" + inner + b"\r\n--xyz--\r\n")
    else:
        body = seeds()[name] if kind == "real" else mutate(seeds()[name], draw(mutations()))
    content_type = draw(st.sampled_from(_CONTENT_TYPES) | st.text(max_size=30))
    query = draw(st.lists(st.tuples(st.sampled_from(_QUERY_KEYS) | st.text(max_size=5),
                                    st.sampled_from(_QUERY_VALUES) | st.text(max_size=5)), max_size=3))
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]))
    path = draw(st.sampled_from(["/predict", "/predict", "/predict/", "/info", "/nope"]))
    return method, path, body, content_type, query


def run_service(example, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """Any request: a JSON refusal with a 4xx status (or a 200 with an image/JSON), never a 5xx or a crash."""
    method, path, body, content_type, query = example
    client = service_client()
    headers = {"content-type": content_type.encode("latin-1", "replace").decode("latin-1")} if content_type else {}
    try:
        answer = client.request(method, path, params=query, content=body if method != "GET" else None, headers=headers)
    except (UnicodeEncodeError, ValueError) as err:  # httpx refuses to send it: nothing reached the app
        if "header" in str(err).lower() or isinstance(err, UnicodeEncodeError):
            return
        raise
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
        message = answer.json()["error"]
        assert isinstance(message, str) and message and "Traceback" not in message


SERVICE = Target("service", requests(), run_service)

TARGETS = {t.name: t for t in (READER, MASKS, PLANS, SERVICE)}

# The targets of handed-over files (plans that expand, ONNX graphs, checkpoint JSON) live in _handed.py, which
# imports the mutations above: registered last, once everything it needs is defined.
from _handed import HANDED  # noqa: E402

TARGETS.update(HANDED)
