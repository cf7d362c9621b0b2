"""Metadata in exported ONNX files that QGIS's Deepness plugin reads, so a GIS user loads the model and runs it.

Deepness reads ``metadata_props`` whose values are JSON: ``model_type`` (``"Segmentor"``), ``class_names``
(``{"0": "background", ...}``, consecutive ids), ``resolution`` (centimetres per pixel), the tile size
(``tiles_size``; older releases read ``tile_size``, so both are written), ``tiles_overlap`` (percent),
``seg_thresh``, ``seg_small_segment`` and ``standardization_mean`` / ``standardization_std`` (applied after
it scales 8-bit pixels to [0, 1]). The graph's output is already the class probabilities Deepness expects.

unetkit normalises images per channel (``data.normalization``): with ``dataset`` statistics the same
normalisation is expressed exactly as Deepness' standardisation of 8-bit imagery (``mean / 255``,
``std / 255``); per-image z-scores are not, and the metadata says so (``unetkit_normalization``), so the
numbers of Deepness and unetkit then differ slightly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetkit._io import atomic_path

if TYPE_CHECKING:
    from unetkit.config import Plan


def deepness_metadata(plan: Plan, *, classes: int, resolution_cm: float | None = None) -> dict[str, str]:
    """The Deepness keys for a run's ``plan`` (values JSON-encoded, as Deepness parses them).

    Args:
        plan: the run's plan (class names, tile size, overlap, threshold, minimum region size, normalisation).
        classes: the model's output channels.
        resolution_cm: the training imagery's ground resolution in cm per pixel (omitted when ``None``).
    """
    names = list(plan.data.classes) if len(plan.data.classes) == classes else (
        ["background", "foreground"] if classes <= 2 else [f"class_{i}" for i in range(classes)])  # fmt: skip
    tile = int(max(plan.infer.tile_size[-2:]))
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): n for i, n in enumerate(names)},
        "tiles_size": tile,
        "tile_size": tile,
        "tiles_overlap": int(round(100 * plan.infer.overlap)),
        "seg_thresh": float(plan.infer.threshold),
        "seg_small_segment": int(plan.infer.min_size),
        "unetkit_normalization": plan.data.normalization,
    }
    if resolution_cm is not None:
        meta["resolution"] = float(resolution_cm)
    if plan.data.normalization == "dataset" and plan.data.intensity_mean:
        meta["standardization_mean"] = [m / 255.0 for m in plan.data.intensity_mean]
        meta["standardization_std"] = [max(s, 1e-6) / 255.0 for s in plan.data.intensity_std]
    return {k: json.dumps(v) for k, v in meta.items()}


def write_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Set ``metadata`` as ``metadata_props`` of the ONNX file ``path`` (replacing keys of the same name),
    rewriting it atomically; the graph is unchanged."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON values decoded (as Deepness reads them)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out
