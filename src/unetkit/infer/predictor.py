"""The predictor: normalise -> tiled (and optionally TTA'd) network -> probabilities -> labels.

It composes the small pure pieces (``tiling``, ``tta``, ``postprocess``) and nothing else.

Example:
    >>> predictor = Predictor.from_run("runs/isbi")
    >>> result = predictor(image)            # image: (C, H, W) raw intensities
    >>> result.labels.shape, result.probabilities.shape
    ((H, W), (K, H, W))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unetkit.config import InferConfig, Plan
from unetkit.data.normalize import normalize_for
from unetkit.infer.fastpath import prepare_for_inference
from unetkit.models.base import load_model
from unetkit.precision import PrecisionChoice, autocast
from unetkit.runtime.run import input_channels

BACKENDS = ("torch", "onnx")


@dataclass
class Prediction:
    """``labels (*spatial)`` int64, ``probabilities (K, *spatial)`` float32, optional ``uncertainty (*spatial)``."""

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray | None = None


class Predictor:
    """Predict any-size images with a trained model and its plan."""

    # What the tiles go through instead of this predictor's own model (see with_network); None: the model.
    _route: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        plan: Plan,
        *,
        device: str = "cpu",
        fast: bool = True,
        infer: InferConfig | None = None,
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        backend_reason: str | None = None,
    ) -> None:
        """Args:
            model: the trained network (not modified; the fast path works on a copy).
            plan: the run's plan (normalisation, spatial dims, inference settings).
            device: torch device for the ``torch`` backend.
            fast: ``torch`` backend: fold batch norm + channels_last (+ ``infer.precision``: with ``auto``, bf16
                where native); False = plain fp32.
            infer: inference settings replacing ``plan.infer``.
            backend: ``torch`` or ``onnx`` (ONNX Runtime on the CPU; see :mod:`unetkit.infer.onnx_backend`).
            onnx_path: ``onnx`` backend: a graph written by ``unetkit export`` for this model; without it the
                model is exported to a temporary file first (slow: tens of seconds).
            backend_reason: why this backend (printed by :meth:`describe`; :meth:`from_run` sets it).

        Raises:
            ValueError: unknown backend or inference settings.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.plan = plan
        self.infer = infer or plan.infer
        self.device = torch.device(device)
        self.spatial_dims = plan.data.spatial_dims
        self.backend = backend
        self.backend_reason = backend_reason or f"{backend} backend"
        self._onnx = None
        if backend == "onnx":
            self.model, self.amp_dtype, self.layout = model.eval(), None, None
            self.precision, self._onnx = _onnx_runner(model, plan, self.infer, onnx_path)
        else:
            self.model, self.precision = prepare_for_inference(
                model, spatial_dims=self.spatial_dims, fast=fast, device=self.device, precision=self.infer.precision
            )
            self.amp_dtype, self.layout = self.precision.dtype, self.precision.layout

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "cpu", fast: bool = True,
                 backend: str = "torch", onnx_path: str | Path | None = None,
                 **infer_overrides: object) -> Predictor:
        """Load ``RUN/<checkpoint>`` and ``RUN/plan.yaml``; ``infer_overrides`` replace plan.infer fields (e.g. tta='d4').

        ``run_dir`` may also be a checkpoint folder on its own (a copied ``RUN/best``): its ``config.json``
        carries the run's plan (``checkpoint`` is then unused). ``backend``: ``torch``, ``onnx``, ``int8`` or
        ``auto`` (what the commands use: the fastest backend this machine has for the run, see
        :func:`unetkit.infer.backend.choose_backend`; ``onnx``/``auto`` may export the graph once into the
        checkpoint folder). ``onnx_path`` runs that graph instead.

        Raises:
            FileNotFoundError: missing plan or checkpoint.
            ValueError: an override that is not an inference setting, or a backend this machine cannot run.
        """
        from unetkit.infer.backend import choose_backend
        from unetkit.run_layout import load_run_plan, weights_dir

        run_dir = Path(run_dir)
        plan = load_run_plan(run_dir)
        known = set(plan.infer.__dict__)
        unknown = sorted(set(infer_overrides) - known)
        if unknown:
            raise ValueError(f"unknown inference setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        infer = InferConfig(**{**plan.infer.__dict__, **infer_overrides})
        weights = weights_dir(run_dir, checkpoint)
        model = load_model(weights)
        if onnx_path is not None:
            return cls(model, plan, device=device, fast=fast, infer=infer, backend="onnx", onnx_path=onnx_path,
                       backend_reason="--onnx")
        choice = choose_backend(weights, requested=backend, device=str(torch.device(device).type))
        if choice.backend == "torch":
            return cls(model, plan, device=device, fast=fast, infer=infer, backend_reason=choice.reason)
        graph = choice.graph
        if choice.backend == "onnx":
            try:
                graph = _cached_graph(model, plan, weights)
            except OSError as err:
                if backend != "auto":
                    raise
                return cls(model, plan, device=device, fast=fast, infer=infer,
                           backend_reason=f"auto: torch (ONNX Runtime graph not cached: {err})")
        return cls(model, plan, device=device, fast=fast, infer=infer, backend="onnx", onnx_path=graph,
                   backend_reason=choice.reason)

    def describe(self) -> str:
        """One line for the user: the backend, the precision and layout, and why each was chosen."""
        if self._onnx is not None:
            kind = "int8" if self.precision.requested == "int8" else "fp32"
            return f"backend: ONNX Runtime, {kind} graph {self._onnx.path} ({self.backend_reason})"
        return f"backend: torch ({self.backend_reason}); {self.precision.describe()}"

    @property
    def with_uncertainty(self) -> bool:
        """Whether tiles carry an extra uncertainty channel (with test-time augmentation)."""
        return self.infer.tta != "none"

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probabilities (K, *spatial), uncertainty (*spatial) or None)`` for a raw ``(C, *spatial)`` image."""
        self._check(image)
        return blended_probabilities(self.tile_fn(), image, self.plan, self.infer, uncertainty=self.with_uncertainty)

    def __call__(self, image: np.ndarray, *, spacing: Sequence[float] | None = None) -> Prediction:
        """Labels and probabilities of a raw ``(C, *spatial)`` image on its own grid; ``spacing`` (the voxel size
        read from the file) makes a plan with ``data.target_spacing`` predict at that spacing and come back."""
        return predict_on_own_grid(self.probabilities, image, self.plan, self.infer, spacing=spacing)

    def tile_fn(self):  # type: ignore[no-untyped-def]
        """Tiles ``(B, C, *tile)`` (normalised) -> ``(B, K[+1], *tile)``: probabilities, plus an uncertainty
        channel last when :attr:`with_uncertainty` (TTA variance across views, averaged over classes), moved
        by ``infer.shift`` when the run's alignment step set one."""
        fn = self._route or self._network
        if self.with_uncertainty:
            from unetkit.infer.tta import make_tta_fn

            # max_batch: a TTA call sends at most batch_size samples to the network, as without TTA, so the
            # views of a batch of tiles do not multiply peak memory by the number of views.
            fn = make_tta_fn(fn, level=self.infer.tta, spatial_dims=self.spatial_dims, uncertainty="variance",
                             max_batch=self.infer.batch_size)
        shift = [float(s) for s in self.infer.shift]
        if not any(shift):
            return fn
        from unetkit.runtime.alignment import shift_tiles

        # Each tile is moved before blending; the blend's weights are ~0 at tile edges, where the shift repeats
        # edge values, so only the image's own border sees the repetition.
        return lambda batch: shift_tiles(fn(batch), shift)

    def network(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass: normalised tiles ``(B, C, *tile)`` -> probabilities ``(B, K, *tile)`` (no TTA, no shift)."""
        return self._network(batch)

    def with_network(self, network: Callable[[torch.Tensor], torch.Tensor]) -> Predictor:
        """A shallow copy (same model and settings) whose tiles go through ``network`` instead of :meth:`network`,
        with TTA and the shift still applied around it. The HTTP service passes its micro-batching queue, which
        runs :meth:`network` in the one thread that owns the model."""
        import copy

        routed = copy.copy(self)
        routed._route = network
        return routed

    def _network(self, batch: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return self._onnx(batch)
        batch = batch.to(self.device)
        if self.layout is not None:
            batch = batch.contiguous(memory_format=self.layout)
        with autocast(self.device, self.amp_dtype):
            logits = self.model(batch)
        if isinstance(logits, (list, tuple)):  # deep supervision: the full-resolution output comes first
            logits = logits[0]
        logits = logits.float()
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    def _check(self, image: np.ndarray) -> None:
        expected = self.spatial_dims + 1
        if image.ndim != expected:
            raise ValueError(f"expected an image of shape (C, *spatial) with {expected} dims, got {image.shape}")
        channels = input_channels(self.plan, fallback=int(image.shape[0]))
        if image.shape[0] != channels:
            raise ValueError(f"the model takes {channels} channel(s); the image has {image.shape[0]}")


def predict_on_own_grid(
    probabilities: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]], image: np.ndarray, plan: Plan,
    infer: InferConfig, *, spacing: Sequence[float] | None,
) -> Prediction:
    """:func:`to_prediction` of ``probabilities(image)``, computed at ``plan.data.target_spacing`` when the image's
    ``spacing`` differs from it: the image is resampled there (:mod:`unetkit.data.resample`), the probabilities
    (and uncertainty) are resampled linearly back to the image's own shape, then thresholded / argmaxed."""
    from unetkit.data.resample import (
        coarse_axis,
        needs_resampling,
        resample_image,
        resample_probabilities,
        resampled_shape,
    )

    target = plan.data.target_spacing
    if target is None or spacing is None or not needs_resampling(spacing, target):
        return to_prediction(*probabilities(image), infer)
    own = image.shape[1:]
    axis = coarse_axis(target)
    moved = resample_image(image, resampled_shape(own, spacing, target),
                           coarse=axis if axis is not None else coarse_axis(spacing))
    probs, uncertainty = probabilities(moved)
    probs = resample_probabilities(probs, own)
    if uncertainty is not None:
        uncertainty = resample_probabilities(uncertainty[None], own)[0]
    return to_prediction(probs, uncertainty, infer)


def to_prediction(probs: np.ndarray, uncertainty: np.ndarray | None, infer: InferConfig) -> Prediction:
    """Labels from ``probs`` (threshold or argmax, then ``infer.min_size``) with the probabilities and uncertainty."""
    from unetkit.runtime.postprocess import probabilities_to_labels, remove_small_components

    labels = probabilities_to_labels(probs, threshold=infer.threshold)
    if infer.min_size > 0:
        labels = remove_small_components(labels, min_size=infer.min_size)
    return Prediction(labels=labels, probabilities=probs, uncertainty=uncertainty)


def blended_probabilities(
    tile_fn: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, plan: Plan, infer: InferConfig, *,
    uncertainty: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise a raw ``(C, *spatial)`` image as ``plan`` says, run ``tile_fn`` over its Gaussian-blended tiles and
    split off the uncertainty channel that ``tile_fn`` appends when ``uncertainty`` (a single model or an ensemble)."""
    from unetkit.runtime.tiling import TileSettings, pass_tiles, sliding_window_predict

    tile, batch = pass_tiles(image.shape[1:], infer.tile_size, max_pass_pixels=infer.max_pass_pixels,
                             batch_size=infer.batch_size)
    out = sliding_window_predict(
        tile_fn,
        torch.from_numpy(normalize_for(image, plan.data)),
        TileSettings(tile_size=tile, overlap=infer.overlap, blend=infer.blend, batch_size=batch),
    ).numpy()
    if uncertainty:
        return out[:-1], out[-1]
    return out, None


def onnx_labeller(graph: Path, *, weights: Path, plan: Plan) -> Callable[[np.ndarray], np.ndarray]:
    """The Predictor running ``graph`` in ONNX Runtime with the run's plan, as a function raw image -> label map
    (what :func:`unetkit.quantize.quantize_run` scores its fp32 and int8 graphs with).

    Args:
        graph: the ``.onnx`` file (read and held to the run's model like ``predict --onnx``).
        weights: the run's checkpoint folder (the model whose channels and classes the graph must match).
        plan: the run's plan (tiling, blending, TTA, shift, labelling).

    Returns:
        ``f(image (C, *spatial)) -> labels (*spatial)``.

    Raises:
        ValueError: the graph does not fit the run.
    """
    predictor = Predictor(load_model(weights).eval(), plan, backend="onnx", onnx_path=graph)
    return lambda image: predictor(image).labels


def _onnx_runner(model: torch.nn.Module, plan: Plan, infer: InferConfig, onnx_path: str | Path | None):  # type: ignore[no-untyped-def]
    """``(precision, ONNX Runtime tile runner)`` for the graph ``onnx_path`` (read as a file that may come from
    someone else, and held to ``model``'s channels and classes), or for ``model`` exported to a temporary file."""
    import tempfile

    from unetkit.infer.onnx_backend import OnnxTileRunner, check_graph_contract, load_onnx_graph
    from unetkit.runtime.onnx_pipeline import export_pipeline

    if onnx_path is not None:
        graph = load_onnx_graph(onnx_path)
        in_channels, classes = _run_channels(model, plan)
        check_graph_contract(graph, path=onnx_path, in_channels=in_channels, classes=classes,
                             spatial_dims=plan.data.spatial_dims)  # fmt: skip
        quantized = any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
        precision = PrecisionChoice(requested="int8" if quantized else "fp32", dtype=None, layout=None,
                                    reason=f"ONNX Runtime graph {Path(onnx_path).name}")  # fmt: skip
        return precision, OnnxTileRunner(onnx_path, graph=graph)
    precision = PrecisionChoice(requested="fp32", dtype=None, layout=None, reason="ONNX Runtime graph, exported now")
    with tempfile.TemporaryDirectory(prefix="unetkit_onnx_") as tmp:
        path = Path(tmp) / "model.onnx"
        channels = input_channels(plan)
        export_pipeline(model, path, in_channels=channels, tile_size=infer.tile_size)
        return precision, OnnxTileRunner(path)  # the session holds the graph in memory; the file may go


def _cached_graph(model: torch.nn.Module, plan: Plan, weights: Path) -> Path:
    """The run's fp32 graph cached beside its weights (exported and parity-checked now if missing or stale)."""
    from unetkit.infer.backend import cached_graph
    from unetkit.runtime.onnx_pipeline import export_run_graph

    return cached_graph(weights, export=lambda path: export_run_graph(model, plan, weights=weights, out=path))


def _run_channels(model: torch.nn.Module, plan: Plan) -> tuple[int, int | None]:
    """``(input channels, classes)`` of the run's model: its typed config (the loaded model's, else the plan's);
    classes None for a model without one (a user's own registered model)."""
    from unetkit.model_config import SegModelConfig

    config = getattr(model, "config", None)
    if not isinstance(config, SegModelConfig):
        config = plan.model.typed()
    if config is None:
        return plan.data.in_channels, None
    return config.in_channels, config.classes
