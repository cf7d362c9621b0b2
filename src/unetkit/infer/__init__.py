"""Inference: test-time augmentation (:mod:`~unetkit.infer.tta`), backends and the
:class:`~unetkit.infer.predictor.Predictor` that composes them with the runtime layer's tiled prediction
(:mod:`~unetkit.runtime.tiling`), post-processing (:mod:`~unetkit.runtime.postprocess`) and overlays
(:mod:`~unetkit.runtime.overlay`). Files, folders and globs are predicted through one entry point,
:func:`unetkit.infer.paths.predict_paths`.

Submodules are imported explicitly (``from unetkit.infer.tta import tta_views``) so that
using one piece does not pull in the others.
"""
