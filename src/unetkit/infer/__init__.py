"""Inference: tiled prediction (:mod:`~unetkit.infer.tiling`), test-time augmentation
(:mod:`~unetkit.infer.tta`), post-processing (:mod:`~unetkit.infer.postprocess`), overlays
(:mod:`~unetkit.infer.overlay`) and the :class:`~unetkit.infer.predictor.Predictor` that composes them.

Submodules are imported explicitly (``from unetkit.infer.tiling import sliding_window_predict``) so that
using one piece does not pull in the others.
"""
