"""The runtime layer: what two or more stages share, below train, infer, export and diffusion.

Stages (``unetkit.train``, ``unetkit.infer``, ``unetkit.export`` / ``unetkit.quantize`` /
``unetkit.onnx_rewrite``, ``unetkit.diffusion``) never import each other; a block several of them use lives
here: a run's typed model options and its split (:mod:`~unetkit.runtime.run`), labelled images in memory
(:mod:`~unetkit.runtime.examples`), sliding-window prediction (:mod:`~unetkit.runtime.tiling`),
probabilities -> labels (:mod:`~unetkit.runtime.postprocess`), overlays (:mod:`~unetkit.runtime.overlay`),
sub-pixel alignment (:mod:`~unetkit.runtime.alignment`) and the ONNX export core
(:mod:`~unetkit.runtime.onnx_export`, :mod:`~unetkit.runtime.onnx_pipeline`). The runtime imports the
building blocks (``models``, ``data``, ``metrics``) and the shared leaves, never a stage.

Submodules are imported explicitly (``from unetkit.runtime.tiling import sliding_window_predict``).
"""
