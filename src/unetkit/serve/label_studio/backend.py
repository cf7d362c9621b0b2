"""The Label Studio ML backend, free of HTTP: ``setup``, ``predict`` and ``webhook`` take and return the JSON
of Label Studio's ML backend protocol (:mod:`unetkit.serve.label_studio.app` puts them on routes).

* ``predict``: each task's image is fetched from Label Studio (:mod:`.images`, the service's byte and pixel
  limits), scored by ``suggest``'s per-image uncertainty (:func:`unetkit.infer.suggest.score_image`, with the
  same TTA views) and segmented; the prediction carries the brush RLE or polygon results, ``score`` = that
  uncertainty score (so sorting tasks by prediction score is ``suggest``'s "label these next" order) and
  ``model_version``. A task whose image cannot be fetched or read gets no prediction; the log names it.
* ``webhook``: an annotation created or updated becomes ``images/task_<id>.<ext>`` + ``masks/task_<id>.png``
  (class indices, written atomically) in ``RUN/label-studio/dataset``, and ``annotations.json`` there maps
  annotation ids to tasks, so that a deletion (Label Studio sends the ids only) removes both files. The start-training
  event, or every ``train_every`` new annotations, starts a fine-tune (:mod:`.training`); its model is served
  only when its validation Dice does not drop (:mod:`.versions`).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._io import atomic_path
from unetkit.serve.label_studio import versions
from unetkit.serve.label_studio.finetune import FineTuneJob
from unetkit.serve.label_studio.images import FetchError, LabelStudio, fetch
from unetkit.serve.label_studio.labelling_config import ConfigMismatch, LabellingConfig, parse_config
from unetkit.serve.label_studio.predictions import BadAnnotation, annotation_mask, results_for
from unetkit.serve.label_studio.training import Busy, FineTuner
from unetkit.serve.service import Limits, ServiceError, sniff_suffix

log = logging.getLogger("unetkit.label_studio")
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENTS = ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED")
INDEX = "annotations.json"  # in the dataset folder: annotation id -> task id of the masks stored
TRAIN_EVENTS = ("START_TRAINING",)


@dataclass(frozen=True)
class BackendOptions:
    """How the backend serves and learns.

    Attributes:
        tta: the TTA views the uncertainty score averages (as ``suggest --tta``).
        train_every: start a fine-tune after this many new annotations (0: only on the start-training event).
        budget_s: each fine-tune's training time in seconds.
        steps: train each fine-tune for exactly this many optimiser steps instead of ``budget_s`` (the same
            fine-tune on a fast or a slow machine); None: the time budget.
        device: torch device for serving and fine-tuning.
        limits: largest image fetched (bytes) and read (pixels).
    """

    tta: str = "flips"
    train_every: int = 0
    budget_s: float = 300.0
    steps: int | None = None
    device: str = "cpu"
    limits: Limits = field(default_factory=Limits)


class LabelStudioBackend:
    """The served model (a :class:`~.versions.Version` and its predictor), the annotation store, the fine-tuner."""

    def __init__(self, run: str | Path, *, studio: LabelStudio, options: BackendOptions | None = None) -> None:
        self.run = Path(run)
        self.studio = studio
        self.options = options or BackendOptions()
        self.dataset = self.run / "label-studio" / "dataset"
        self._lock = threading.Lock()
        self._new_annotations = 0
        self.version, self.predictor = self._load(versions.current(self.run))
        self.trainer = FineTuner(self._finished)
        self.last_training: dict[str, Any] | None = None

    # -- the served model --------------------------------------------------------------------------
    def _load(self, version: versions.Version) -> tuple[versions.Version, Any]:
        from unetkit.infer.predictor import Predictor

        predictor = Predictor.from_run(version.folder, device=self.options.device, tta=self.options.tta)
        return version, predictor

    @property
    def model_version(self) -> str:
        return self.version.model_version

    @property
    def classes(self) -> list[str]:
        """The run's class names, background first (as ``/info`` of ``serve`` lists them)."""
        from unetkit.serve.service import class_table

        plan = self.predictor.plan
        typed = plan.model.typed()  # None: a registered model without a typed config (then two classes)
        return [c["name"] for c in class_table(plan.data, max(typed.classes if typed is not None else 2, 2))]

    def health(self) -> dict[str, Any]:
        """``/health``: up, the model version and whether a fine-tune runs."""
        return {"status": "UP", "model_class": "unetkit", "model_version": self.model_version,
                "training": self.trainer.running}  # fmt: skip

    # -- protocol ------------------------------------------------------------------------------------
    def setup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``/setup``: check the project's labelling config against the run's classes.

        Raises:
            ServiceError: 400 naming the labels that do not match the run's classes.
        """
        self._config(payload.get("schema") or payload.get("label_config"))
        return {"model_version": self.model_version}

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``/predict``: one prediction per task whose image could be read, an empty list for any other.

        Raises:
            ServiceError: 400 for a labelling config the run cannot serve or a body without tasks.
        """
        config = self._config(payload.get("label_config") or payload.get("schema"))
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise ServiceError(400, "the request has no 'tasks' list")
        with self._lock:
            version, predictor = self.version, self.predictor
        results: list[Any] = []
        for task in tasks:
            try:
                results.append(self._predict_task(task, config, predictor, version))
            except (FetchError, ServiceError, ValueError) as err:
                message = err.message if isinstance(err, ServiceError) else str(err)
                log.warning("task %s: no prediction: %s", task.get("id"), message)
                results.append([])  # one entry per task (Label Studio pairs them by position): no prediction
        return {"results": results, "model_version": version.model_version}

    def webhook(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``/webhook``: store, remove or learn from annotations.

        Raises:
            ServiceError: 400 for an annotation that cannot become a mask, 409 when a fine-tune is running.
        """
        action = str(payload.get("action", ""))
        if action in ANNOTATION_EVENTS:
            stored = self._store(payload)
            return {"status": "stored", **stored, **self._maybe_train()}
        if action in DELETE_EVENTS:
            return {"status": "deleted", "removed": self._remove(payload)}
        if action in TRAIN_EVENTS:
            return self.start_training()
        return {"status": "ignored", "action": action}

    # -- predictions ---------------------------------------------------------------------------------
    def _config(self, text: Any) -> LabellingConfig:
        try:
            config = parse_config(text if isinstance(text, str) else "")
            config.class_map(self.classes)
        except ConfigMismatch as err:
            log.warning("labelling config refused: %s", err)
            raise ServiceError(400, str(err)) from err
        return config

    def _predict_task(self, task: dict[str, Any], config: LabellingConfig, predictor: Any,
                      version: versions.Version) -> dict[str, Any]:  # fmt: skip
        from unetkit.infer.suggest import SuggestOptions, score_image

        image = self._task_image(task, config)
        typed = predictor.plan.model.typed()
        channels = typed.in_channels if typed is not None else int(predictor.plan.data.in_channels)
        if image.shape[0] != channels or image.ndim != 3:
            raise ValueError(f"the image has shape {image.shape}; the run takes {channels}-channel 2D images")
        scored, _, labels = score_image(predictor, image.astype(np.float32), options=SuggestOptions(tta=self.options.tta))
        results = results_for(np.asarray(labels), config=config, classes=self.classes)
        return {"result": results, "score": float(scored.score), "model_version": version.model_version}

    def _task_image(self, task: dict[str, Any], config: LabellingConfig) -> np.ndarray:
        """The ``(C, H, W)`` pixels of a task's image."""
        from unetkit.data.io import read_image

        data, suffix = self._task_bytes(task, config)
        with tempfile.TemporaryDirectory(prefix="unetkit-ls-") as tmp:
            path = Path(tmp) / f"image{suffix}"
            path.write_bytes(data)
            self._check_pixels(path)
            return np.asarray(read_image(path).array)

    def _task_bytes(self, task: dict[str, Any], config: LabellingConfig) -> tuple[bytes, str]:
        raw = task.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        reference = str(data.get(config.image_key) or "")
        body = fetch(reference, studio=self.studio, max_bytes=self.options.limits.max_bytes)
        try:
            return body, sniff_suffix(body[:8])
        except ServiceError as err:
            raise FetchError(f"image {str(reference)[:200]!r}: not an image unetkit reads") from err

    def _check_pixels(self, path: Path) -> None:
        from unetkit.data.io import image_shape

        try:
            shape = image_shape(path)
        except (ValueError, OSError, Warning) as err:
            raise FetchError(f"unreadable image ({type(err).__name__})") from err
        pixels = int(np.prod(shape[1:]))
        if pixels > self.options.limits.max_pixels:
            raise FetchError(f"image of {pixels} pixels exceeds the limit of {self.options.limits.max_pixels}")

    # -- annotations ---------------------------------------------------------------------------------
    def _store(self, payload: dict[str, Any]) -> dict[str, Any]:
        from unetkit.data.io import write_image

        task, annotation = payload.get("task"), payload.get("annotation")
        raw = payload.get("project")
        project: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if not isinstance(task, dict) or not isinstance(annotation, dict) or not isinstance(task.get("id"), int):
            raise ServiceError(400, "the annotation event has no 'task' (with an integer id) or no 'annotation'")
        config = self._config(project.get("label_config") or payload.get("label_config"))
        try:
            body, suffix = self._task_bytes(task, config)
        except FetchError as err:
            raise ServiceError(400, f"task {task['id']}: {err}") from err
        image = self._pixels(body, suffix, task["id"])
        try:
            mask = annotation_mask(annotation.get("result") or [], config=config, classes=self.classes,
                                   size=image.shape[-2:])  # fmt: skip
        except BadAnnotation as err:
            log.warning("task %s: annotation %s not stored: %s", task["id"], annotation.get("id"), err)
            raise ServiceError(400, f"task {task['id']}, annotation {annotation.get('id')}: {err}") from err
        stem = f"task_{task['id']}"
        self._remove_task(stem)
        for folder in ("images", "masks"):
            (self.dataset / folder).mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dataset / "images" / f"{stem}{suffix}") as tmp:
            tmp.write_bytes(body)  # the file as Label Studio holds it
        write_image(self.dataset / "masks" / f"{stem}.png", mask[None])
        self._remember(annotation.get("id"), task["id"])
        with self._lock:
            self._new_annotations += 1
        log.info("task %s: annotation %s stored (%d pixels labelled)", task["id"], annotation.get("id"),
                 int((mask > 0).sum()))  # fmt: skip
        return {"task": task["id"], "mask": str(self.dataset / "masks" / f"{stem}.png")}

    def _pixels(self, body: bytes, suffix: str, task_id: int) -> np.ndarray:
        from unetkit.data.io import read_image

        with tempfile.TemporaryDirectory(prefix="unetkit-ls-") as tmp:
            path = Path(tmp) / f"image{suffix}"
            path.write_bytes(body)
            try:
                self._check_pixels(path)
            except FetchError as err:
                raise ServiceError(400, f"task {task_id}: {err}") from err
            return np.asarray(read_image(path).array)

    def _index(self) -> dict[str, int]:
        from unetkit.untrusted import UntrustedFileError, load_json_limited

        path = self.dataset / INDEX
        try:
            raw = load_json_limited(path, what="annotation index", max_bytes=64 * 2**20) if path.is_file() else {}
        except UntrustedFileError as err:
            log.warning("%s; annotations deleted in Label Studio stay in the dataset", err)
            return {}
        return {str(k): v for k, v in raw.items() if isinstance(v, int)} if isinstance(raw, dict) else {}

    def _remember(self, annotation_id: Any, task_id: int) -> None:
        from unetkit._io import write_json_atomic

        index = {k: v for k, v in self._index().items() if v != task_id}
        index[str(annotation_id)] = task_id
        write_json_atomic(self.dataset / INDEX, index)

    def _remove(self, payload: dict[str, Any]) -> list[int]:
        """Drop the masks of deleted annotations (Label Studio sends their ids only); returns the tasks."""
        from unetkit._io import write_json_atomic

        listed = payload.get("annotations") or [payload.get("annotation")]
        ids = {str(a.get("id")) for a in listed if isinstance(a, dict)}
        index = self._index()
        tasks = [index.pop(i) for i in sorted(ids) if i in index]
        for task_id in tasks:
            self._remove_task(f"task_{task_id}")
            log.info("task %s: annotation deleted in Label Studio; its mask is removed", task_id)
        if tasks:
            write_json_atomic(self.dataset / INDEX, index)
        return tasks

    def _remove_task(self, stem: str) -> bool:
        removed = False
        for folder in ("images", "masks"):
            for path in (self.dataset / folder).glob(f"{stem}.*"):
                path.unlink(missing_ok=True)
                removed = True
        return removed

    # -- learning ------------------------------------------------------------------------------------
    def _maybe_train(self) -> dict[str, Any]:
        every = self.options.train_every
        if not every or self._new_annotations < every:
            return {}
        try:
            return {"training": self.start_training()}
        except ServiceError as err:  # already running: the annotation is stored; the next one tries again
            return {"training": {"status": "busy", "message": err.message}}

    def start_training(self) -> dict[str, Any]:
        """Start a fine-tune of the served model on the stored annotations.

        Raises:
            ServiceError: 409 while a fine-tune runs (the served model stays), 400 without annotations.
        """
        masks = sorted((self.dataset / "masks").glob("task_*.png")) if (self.dataset / "masks").is_dir() else []
        if len(masks) < 2:
            raise ServiceError(400, f"{len(masks)} annotation(s) stored; a fine-tune needs at least 2")
        name = versions.next_name(self.run)
        job = FineTuneJob(current=str(self.version.folder), data=str(self.dataset),
                          out=str(versions.versions_dir(self.run) / name), classes=tuple(self.classes),
                          budget_s=self.options.budget_s, device=self.options.device,
                          steps=self.options.steps)  # fmt: skip
        try:
            self.trainer.start(job)
        except Busy as err:
            log.warning("%s", err)
            raise ServiceError(409, str(err)) from err
        with self._lock:
            self._new_annotations = 0
        budget = f"{self.options.steps} steps" if self.options.steps else f"budget {self.options.budget_s:g} s"
        log.info("fine-tune %s started on %d annotation(s), %s", name, len(masks), budget)
        return {"status": "training", "version": name, "annotations": len(masks), "model_version": self.model_version}

    def _finished(self, job: FineTuneJob, decision: dict[str, Any] | None, message: str) -> None:
        name = Path(job.out).name
        self.last_training = {"version": name, "decision": decision, "message": message}
        if decision is None:
            log.error("%s; still serving %s", message, self.model_version)
            return
        old, new = decision.get("old_dice"), decision.get("new_dice")
        if not decision.get("swap"):
            log.warning("fine-tune %s kept aside (%s: %s -> %s); still serving %s", name, decision.get("reason"),
                        old, new, self.model_version)  # fmt: skip
            return
        version, predictor = self._load(versions.describe(self.run, name))
        with self._lock:
            previous = self.version.model_version
            self.version, self.predictor = version, predictor
        versions.set_current(self.run, version)
        log.info("serving %s (was %s): validation Dice %s -> %s", version.model_version, previous, old, new)
