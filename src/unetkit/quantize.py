"""Static int8 quantisation of an exported pipeline graph, accepted only if the validation score holds.

:func:`quantize_run` takes the fp32 graph that ``unetkit export`` wrote for a run and:

1. draws calibration tiles from the run's own *training* images (the split training used), normalised as the
   plan says (:func:`unetkit.data.normalize.normalize_for`), at random positions;
2. quantises with ONNX Runtime (``quantize_static``: QDQ format, int8 weights per output channel, uint8
   activations with MinMax ranges from the calibration tiles; the final softmax / sigmoid stays float, so the
   probabilities keep their resolution), after rewriting the decoder's transposed convolutions into int8-able
   operations (:mod:`unetkit.onnx_rewrite`); the graph keeps its ``image`` input and ``probabilities`` output;
3. predicts the run's *validation* images through the normal :class:`~unetkit.infer.predictor.Predictor`
   (tiling, blending, TTA and shift from the plan) with the fp32 and the int8 graph, and compares foreground
   Dice (binary) or mean IoU (multi-class) and images per second; the Predictor is inference's, so the caller
   hands it in (``labeller=unetkit.infer.predictor.onnx_labeller``: stages do not import each other);
4. publishes the int8 graph (temporary file, then rename) only when ``fp32 score - int8 score <= max_drop``;
   otherwise it raises :class:`QuantizationRefused` and leaves nothing behind.

int8 speed depends on the CPU's int8 dot-product instructions (``avx512_vnni`` / ``avx_vnni``, ``amx_int8``);
:func:`int8_report` records which the machine has next to the measured speeds.

Example (the default Lite0 plan on ISBI 2012 after 150 steps, 6 validation slices, a busy 2-core machine):
    >>> result = quantize_run("runs/isbi", "model.onnx", "model.int8.onnx", labeller=onnx_labeller,
    ...                       calibration_patches=32)
    >>> result.dice_fp32, result.dice_int8, result.images_per_s
    (0.8172, 0.8173, {'fp32': 0.22, 'int8': 0.35})
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unetkit.config import Plan
from unetkit.data.normalize import normalize_for
from unetkit.run_layout import load_run_plan, weights_dir
from unetkit.runtime.examples import Example, labelled_example, split_examples
from unetkit.runtime.run import input_channels, label_classes

DEFAULT_CALIBRATION_PATCHES = 32
DEFAULT_MAX_DROP = 0.01
# Kept in float: quantising the probabilities (softmax written out as ReduceMax, Sub, Exp, ReduceSum, Div; or
# sigmoid) would round them to steps of 1/255 before blending.
FLOAT_OPS = ("Softmax", "Sigmoid", "ReduceMax", "Sub", "Exp", "ReduceSum", "Div")

PatchTransform = Callable[[np.ndarray], np.ndarray]


class GraphLabeller(Protocol):
    """How a graph predicts: ``labeller(graph, weights=..., plan=...)`` is a function raw image -> label map.

    :func:`unetkit.infer.predictor.onnx_labeller` is the one unetkit uses: the normal Predictor (the plan's
    tiling, blending, TTA and shift) running the graph in ONNX Runtime.
    """

    def __call__(self, graph: Path, *, weights: Path, plan: Plan) -> Callable[[np.ndarray], np.ndarray]: ...


@dataclass
class QuantizeResult:
    """What :func:`quantize_run` measured.

    Attributes:
        metric: ``foreground_dice`` (two classes or one sigmoid channel) or ``miou`` (more classes).
        dice_fp32: the metric of the fp32 graph on the validation images (named Dice for both metrics).
        dice_int8: the same for the int8 graph.
        drop: ``dice_fp32 - dice_int8``.
        images_per_s: ``{"fp32": ..., "int8": ...}``, whole validation images through the Predictor.
        validation_images: how many images were scored.
        max_drop: the largest accepted drop.
        calibration_patches: how many tiles calibrated the activation ranges.
        quantized_nodes: QuantizeLinear nodes in the int8 graph.
        file_size_bytes: size of the int8 graph.
        path: where the int8 graph is (or would have been) written.
    """

    metric: str
    dice_fp32: float
    dice_int8: float
    drop: float
    images_per_s: dict[str, float] = field(default_factory=dict)
    validation_images: int = 0
    max_drop: float = DEFAULT_MAX_DROP
    calibration_patches: int = 0
    quantized_nodes: int = 0
    file_size_bytes: int = 0
    path: str = ""


class QuantizationRefused(RuntimeError):
    """The int8 graph loses more validation score than allowed; it was not written.

    Attributes:
        result: the measurements (:class:`QuantizeResult`, as :func:`quantize_run` would have returned them).
    """

    def __init__(self, message: str, result: QuantizeResult) -> None:
        super().__init__(message)
        self.result = result


def quantize_run(
    run_dir: str | os.PathLike[str],
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    labeller: GraphLabeller,
    checkpoint: str = "best",
    calibration_patches: int = DEFAULT_CALIBRATION_PATCHES,
    max_drop: float = DEFAULT_MAX_DROP,
    calibration_transform: PatchTransform | None = None,
) -> QuantizeResult:
    """Quantise ``fp32_path`` (``unetkit export``'s graph of ``run_dir``) to ``out_path`` if the score holds.

    Args:
        run_dir: the training run (``plan.yaml`` says where the data is and how it was split and normalised).
        fp32_path: the exported fp32 graph of ``run_dir/checkpoint``.
        out_path: destination of the int8 graph (written atomically, only when accepted).
        labeller: how a graph predicts an image (``unetkit.infer.predictor.onnx_labeller``).
        checkpoint: ``best`` or ``last``: the weights the graph came from (the Predictor loads them too).
        calibration_patches: how many training tiles calibrate the activation ranges.
        max_drop: largest accepted ``score_fp32 - score_int8`` on the validation images.
        calibration_transform: applied to every normalised calibration tile ``(1, C, *tile)`` before ONNX
            Runtime sees it; for tests that need a deliberately bad calibration (e.g. ``lambda p: p * 1000``).

    Returns:
        :class:`QuantizeResult`; ``dice_*`` hold the metric named by ``metric`` (``foreground_dice`` or ``miou``).

    Raises:
        QuantizationRefused: the drop exceeds ``max_drop`` (nothing written).
        ValueError: bad arguments, a multi-label run, or a run without training or validation images.
        FileNotFoundError: missing run files or graph.
    """
    run_dir, fp32_path, out_path = Path(run_dir), Path(fp32_path), Path(out_path)
    _check_arguments(fp32_path, out_path, calibration_patches=calibration_patches, max_drop=max_drop)
    plan = load_run_plan(run_dir)
    train, val = training_split(plan)
    patches = calibration_tiles(train, plan, count=calibration_patches, seed=plan.train.seed)
    if calibration_transform is not None:
        patches = [np.ascontiguousarray(calibration_transform(p), dtype=np.float32) for p in patches]
    # A unique name beside the destination (same filesystem: the rename is atomic), created by ONNX Runtime
    # itself so that it gets the usual permissions.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        quantized = quantize_graph(fp32_path, tmp, patches)
        result = compare_graphs(weights_dir(run_dir, checkpoint), plan, val, fp32=fp32_path, int8=tmp,
                                labeller=labeller)
        result.max_drop, result.calibration_patches, result.quantized_nodes = float(max_drop), len(patches), quantized
        result.file_size_bytes, result.path = tmp.stat().st_size, str(out_path)
        if not result.drop <= max_drop:  # also refuses a NaN score
            raise QuantizationRefused(_refusal(result), result)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _check_arguments(fp32_path: Path, out_path: Path, *, calibration_patches: int, max_drop: float) -> None:
    if not fp32_path.is_file():
        raise FileNotFoundError(f"{fp32_path}: no such ONNX model (export the fp32 graph first)")
    if out_path.resolve() == fp32_path.resolve():
        raise ValueError(f"{out_path}: the int8 graph would overwrite the fp32 graph")
    if out_path.suffix.lower() != ".onnx":
        raise ValueError(f"{out_path}: the int8 graph must end in .onnx")
    if calibration_patches < 1:
        raise ValueError(f"calibration patches must be >= 1, got {calibration_patches}")
    if not max_drop >= 0:
        raise ValueError(f"the largest accepted int8 drop must be >= 0, got {max_drop}")
    out_path.parent.mkdir(parents=True, exist_ok=True)


def _refusal(result: QuantizeResult) -> str:
    name = "Dice" if result.metric == "foreground_dice" else "mIoU"
    return (f"int8 graph refused: validation {name} drops by {result.drop:.4f} (fp32 {result.dice_fp32:.4f} "
            f"-> int8 {result.dice_int8:.4f}), more than the allowed {result.max_drop:g}; no int8 file written")


def training_split(plan: Plan) -> tuple[list[Example], list[Example]]:
    """The run's training and validation images, raw (not normalised), split exactly as training split them.

    Same samples (``plan.data``), same groups and the same split function and arguments
    (``plan.train.val_fraction`` / ``folds`` / ``fold`` / ``seed``) as :func:`unetkit.train.loop.train`.

    Raises:
        ValueError: a multi-label run (its masks are not label maps), or no validation images.
    """
    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import discover

    if plan.data.task == "multilabel":
        raise ValueError("int8 export measures Dice on label maps; multi-label runs are not supported")
    samples = discover(plan.data).samples
    loaded = load_samples(samples, plan.data)
    examples = [labelled_example(s.key, s.image, s.mask) for s in loaded]
    cfg = plan.train
    train, val = split_examples(examples, [s.group for s in samples], plan=plan)
    if not val or not train:
        raise ValueError(f"{plan.data.root}: the int8 check needs training and validation images; the split "
                         f"gave {len(train)} and {len(val)} (train.val_fraction={cfg.val_fraction})")
    return train, val


def calibration_tiles(examples: Sequence[Example], plan: Plan, *, count: int, seed: int) -> list[np.ndarray]:
    """``count`` normalised float32 tiles ``(1, C, *infer.tile_size)`` at random positions of ``examples``.

    Images are taken in a random order (cycling when ``count`` exceeds them), each normalised whole, as the
    Predictor does; an image smaller than the tile along an axis gives its full extent there.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    tile = [int(t) for t in plan.infer.tile_size]
    cache: dict[int, np.ndarray] = {}
    tiles = []
    for i in range(count):
        index = int(order[i % len(order)])
        if index not in cache:
            cache[index] = normalize_for(examples[index].image, plan.data)
        image = cache[index]
        spatial = image.shape[1:]
        sizes = [min(t, s) for t, s in zip(tile, spatial, strict=True)]
        starts = [int(rng.integers(0, s - z + 1)) for s, z in zip(spatial, sizes, strict=True)]
        window = (slice(None), *(slice(a, a + z) for a, z in zip(starts, sizes, strict=True)))
        tiles.append(np.ascontiguousarray(image[window][None], dtype=np.float32))
    return tiles


def has_int8_dot_product(flags: dict[str, bool] | None = None) -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8).

    Without them ONNX Runtime's uint8 x int8 kernels (AVX2's ``vpmaddubsw``) add pairs of products in 16 bits,
    which saturates for large activations times large weights; ONNX Runtime's quantization guide recommends
    7-bit weights (``reduce_range``) on such CPUs, so :func:`quantize_graph` uses them there.
    """
    from unetkit.precision import cpu_flags

    flags = cpu_flags() if flags is None else flags
    return any(flags.get(name, False) for name in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quantize_graph(fp32_path: Path, out_path: Path, tiles: Sequence[np.ndarray]) -> int:
    """Write the QDQ int8 version of ``fp32_path`` to ``out_path``, calibrated on ``tiles``; the number of
    quantised nodes (``QuantizeLinear``) it holds.

    ONNX Runtime's pre-processing (graph optimisation such as batch-norm folding) runs first, then
    :func:`unetkit.onnx_rewrite.pixel_shuffle_upsampling` (the decoder's transposed convolutions as int8 1x1
    convolutions plus a pixel shuffle: ONNX Runtime has no int8 ``ConvTranspose``); nodes in :data:`FLOAT_OPS`
    stay in float. Weights use 7 bits on a CPU without int8
    dot-product instructions (see :func:`has_int8_dot_product`), all 8 elsewhere.

    Raises:
        RuntimeError: the quantised graph lost the input or output names of the fp32 graph.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from unetkit.onnx_rewrite import pixel_shuffle_upsampling, shape_from_quantized

    with tempfile.TemporaryDirectory(prefix="unetkit_int8_", dir=out_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        if pixel_shuffle_upsampling(model):
            onnx.save(model, str(prepared))
        graph = model.graph
        keep_float = [n.name for n in graph.node if n.op_type in FLOAT_OPS]
        quantize_static(
            str(prepared), str(out_path), _reader(graph.input[0].name, tiles), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float, calibrate_method=CalibrationMethod.MinMax,
            reduce_range=not has_int8_dot_product(),
        )  # fmt: skip
    quantized = onnx.load(str(out_path))
    if shape_from_quantized(quantized):
        onnx.save(quantized, str(out_path))
    return _check_names(fp32_path, out_path)


def _check_names(fp32_path: Path, int8_path: Path) -> int:
    import onnx

    before, after = onnx.load(str(fp32_path)).graph, onnx.load(str(int8_path)).graph
    names = [([i.name for i in g.input], [o.name for o in g.output]) for g in (before, after)]
    if names[0] != names[1]:
        raise RuntimeError(f"quantisation changed the graph's inputs/outputs from {names[0]} to {names[1]}")
    return sum(n.op_type == "QuantizeLinear" for n in after.node)


def _reader(input_name: str, tiles: Sequence[np.ndarray]):  # type: ignore[no-untyped-def]
    """An ONNX Runtime calibration reader feeding ``tiles`` one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class TileReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._tiles = iter(tiles)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tile = next(self._tiles, None)
            return None if tile is None else {input_name: tile}

    return TileReader()


def compare_graphs(
    checkpoint: Path, plan: Plan, images: Sequence[Example], *, fp32: Path, int8: Path, labeller: GraphLabeller
) -> QuantizeResult:
    """Score and speed of the fp32 and int8 graphs on ``images`` through ``labeller`` (the normal Predictor).

    Returns:
        :class:`QuantizeResult` with ``metric``, ``dice_fp32``, ``dice_int8``, ``drop``, ``images_per_s`` and
        ``validation_images`` set.
    """
    fp32_score, fp32_speed = score_graph(labeller(fp32, weights=checkpoint, plan=plan), plan, images)
    int8_score, int8_speed = score_graph(labeller(int8, weights=checkpoint, plan=plan), plan, images)
    return QuantizeResult(
        metric="miou" if label_classes(plan) > 2 else "foreground_dice",
        dice_fp32=fp32_score,
        dice_int8=int8_score,
        drop=fp32_score - int8_score,
        images_per_s={"fp32": fp32_speed, "int8": int8_speed},
        validation_images=len(images),
    )


def score_graph(
    predict: Callable[[np.ndarray], np.ndarray], plan: Plan, images: Sequence[Example]
) -> tuple[float, float]:
    """``(mean score, images per second)`` of ``predict`` (raw image -> label map) on ``images`` with their masks.

    The score per image is foreground Dice (two classes or one sigmoid channel) or mean IoU (more classes),
    over the foreground classes (all classes when ``plan.data.background`` is False); ``ignore_index`` pixels
    do not count. The time covers normalising, tiling, the graph, blending and labelling; one tile-sized image is
    predicted first so that ONNX Runtime's first-call set-up is not timed.
    """
    predict(np.zeros((input_channels(plan), *(int(t) for t in plan.infer.tile_size)), np.float32))
    start = time.perf_counter()
    labels = [predict(example.image) for example in images]
    seconds = max(time.perf_counter() - start, 1e-9)
    scores = [image_score(pred, example.mask, plan) for pred, example in zip(labels, images, strict=True)]
    return float(np.mean(scores)), len(images) / seconds


def image_score(pred: np.ndarray, target: np.ndarray, plan: Plan) -> float:
    """Foreground Dice (binary) or mean IoU (multi-class) of one label map against its mask."""
    from unetkit.metrics import dice_per_class, iou_per_class

    classes = label_classes(plan)
    per_class = (iou_per_class if classes > 2 else dice_per_class)(
        pred, target, num_classes=classes, ignore_index=plan.data.ignore_index
    )
    scores = np.asarray(per_class)
    return float(np.mean(scores[1:] if plan.data.background else scores))


def int8_report(fp32_report: dict[str, Any], result: QuantizeResult, *, cpu: dict[str, bool]) -> dict[str, Any]:
    """The int8 graph's JSON report: the fp32 report (same input, output, preprocessing and weights, so
    ``unetkit predict --onnx`` accepts it) with the int8 file, the measured scores and speeds, and ``cpu``."""
    report = {k: v for k, v in fp32_report.items() if k != "parity"}
    report.update(
        model_file=Path(result.path).name,
        file_size_bytes=result.file_size_bytes,
        precision="int8",
        metric=result.metric,
        dice_fp32=result.dice_fp32,
        dice_int8=result.dice_int8,
        drop=result.drop,
        max_drop=result.max_drop,
        images_per_s=dict(result.images_per_s),
        validation_images=result.validation_images,
        quantization={
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "weights": "int8, symmetric, per output channel"
                       + ("" if has_int8_dot_product(cpu) else ", 7-bit range (this CPU has no VNNI)"),
            "activations": "uint8, asymmetric, MinMax ranges",
            "float_ops": list(FLOAT_OPS),
            "graph_rewrites": ["ConvTranspose with kernel = stride -> int8 1x1 Conv + channels-last pixel shuffle "
                               "(unetkit.onnx_rewrite; exact in fp32)"],
            "calibration_patches": result.calibration_patches,
            "calibration_data": "random tiles of the run's training images, normalised as the plan says",
            "quantized_nodes": result.quantized_nodes,
            "fp32_model_file": fp32_report.get("model_file"),
            "timing": "whole validation images through the Predictor (the plan's tiling, TTA and shift), ONNX "
                      f"Runtime's default threads, on a machine with {os.cpu_count()} logical CPUs",
        },
        cpu=dict(cpu),
    )
    return report


__all__ = [
    "DEFAULT_CALIBRATION_PATCHES",
    "DEFAULT_MAX_DROP",
    "GraphLabeller",
    "QuantizationRefused",
    "QuantizeResult",
    "calibration_tiles",
    "compare_graphs",
    "image_score",
    "int8_report",
    "has_int8_dot_product",
    "quantize_graph",
    "quantize_run",
    "score_graph",
    "training_split",
]
