"""The training loop: read it top to bottom.

Everything it needs comes from the :class:`~unetkit.config.Plan`; all state is local and explicit, and
everything that must survive a kill (model, optimiser, EMA, loss scaler, step, torch RNG state, planned
step count) is saved together so that ``--resume`` continues exactly (bit-exact on CPU). The batch of
step ``s`` depends only on ``(seed, s)`` (:mod:`unetkit.train.prefetch`), so batches need no saved state
and ``train.workers`` processes can prepare them ahead without changing them.

Started by ``torchrun``, each process trains a DistributedDataParallel copy on its own batches; rank 0
alone validates, writes the run and keeps the budget, and broadcasts what it decides
(:mod:`unetkit.train.distributed`). In a single process those steps do nothing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.config import Plan, TrainConfig
from unetkit.data.dataset import LoadedSample
from unetkit.data.splits import LabelledSubset
from unetkit.models.base import save_pretrained
from unetkit.models.ema import ema_decay_at, update_ema
from unetkit.models.factory import create_model
from unetkit.precision import PrecisionChoice, autocast, backward_and_step, choose_precision, grad_scaler_for
from unetkit.ranks import DistContext
from unetkit.run_layout import LABELLED_NAME, PLAN_KEY
from unetkit.runtime.examples import Example, split_examples
from unetkit.runtime.run import output_classes
from unetkit.train import distributed
from unetkit.train.align import align_predictions
from unetkit.train.batches import PatchBatcher
from unetkit.train.budget import default_val_every, first_estimate
from unetkit.train.checkpoint import load_training_state, save_training_state
from unetkit.train.evaluation import foreground_dice, predict_labels
from unetkit.train.logging import MetricsLog, Progress, TensorBoardLog
from unetkit.train.overlays import write_validation_overlays
from unetkit.train.prefetch import BatchStream
from unetkit.train.schedule import lr_at
from unetkit.train.semisup import (
    SemiBatcher,
    UnlabelledBatcher,
    load_unlabelled_images,
    teacher_probabilities,
    unsupervised_loss,
    unsupervised_weight,
)
from unetkit.train.setup import build_optimizer, load_examples, prepare_run_dir
from unetkit.train.state import LoopState

CALIBRATION_STEPS = 8


@dataclass
class TrainResult:
    """What :func:`train` did: where, how many steps, the best validation score, seconds, precision."""

    run_dir: Path
    steps: int
    best_score: float
    seconds: float
    # (shift, validation score without it, with it) from the alignment step, or None (see train/align.py)
    alignment: tuple[list[float], float, float] | None = None
    precision: str = "fp32"  # what the steps computed in (unetkit.precision.PrecisionChoice.name)


def train(
    plan: Plan,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    device: str = "cpu",
    loaded: list[LoadedSample] | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train ``plan`` into ``run_dir`` (what ``unetkit train`` runs; under ``torchrun``, one process of a DDP run).

    Example:
        >>> from unetkit.config import Plan
        >>> plan = Plan.load("plan.yaml")            # written by `unetkit plan DATA --out plan.yaml`
        >>> result = train(plan, "runs/em")          # doctest: +SKIP
        >>> result.steps, result.best_score          # doctest: +SKIP

    Args:
        plan: the full plan (data, model, train, infer); saved as ``run_dir/plan.yaml``.
        run_dir: the run folder to write (layout in :mod:`unetkit.config`).
        resume: continue the run saved in ``run_dir`` (bit-identical to an uninterrupted run).
        overwrite: replace a run already in ``run_dir``.
        stop_after: end early after that many steps (for tests).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        loaded: the dataset already read by a passed check (see :func:`unetkit.train.setup.load_examples`,
            which empties the list); by default the data ``plan.data`` names is checked and read here.
        init_from: a saved model folder (``RUN/best``) whose weights start the training (a fine-tune of that
            model; its architecture must be the plan's). Ignored when resuming.

    Returns:
        The steps done, the best validation score, the seconds spent, the precision trained in and the
        alignment step's result.

    Raises:
        FileExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: ``resume`` without a saved state in ``run_dir``.
        ValueError: the dataset has errors (as ``unetkit check`` reports them) or the plan does not fit it.
    """
    cfg = plan.train
    ctx = distributed.context_from_env()
    dev = distributed.setup(ctx, device)
    if ctx.is_main:
        run_dir = prepare_run_dir(Path(run_dir), resume=resume, overwrite=overwrite)
    distributed.barrier(ctx)
    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)

    # 1. Data: checked, loaded, split by group, normalised; a patch batcher with augmentation.
    examples, groups = load_examples(plan.data, loaded=loaded)
    # The run's split; train --labels / --labels-file keep a subset of the training side.
    train_set, val_set = split_examples(examples, groups, plan=plan)
    if ctx.is_main and LabelledSubset.of(cfg).active:
        _write_labelled(run_dir, train_set)
    unlabelled = load_unlabelled_images(plan)  # train --unlabelled: images without masks (None without it)
    # 2. Model, optimiser, loss, precision (and the EMA, which is the mean teacher of the unlabelled images).
    parts = _build_parts(plan, dev, ctx)
    if init_from is not None and not resume:
        _load_weights(parts, Path(init_from))
    # 3. Fresh start or exact resume; only rank 0 logs, shows progress and writes files.
    state = _start_state(plan, run_dir, parts, resume=resume, main=ctx.is_main)
    out = _Reporters.open(run_dir, state, resume=resume, main=ctx.is_main)
    _note_precision(state, parts.precision, out.progress)
    started = time.perf_counter() - state.elapsed
    batches = BatchStream(
        _batcher(plan, train_set, unlabelled), seed=cfg.seed, start=state.step, workers=cfg.workers,
        pin_memory=dev.type == "cuda", rank=ctx.rank,
    )  # fmt: skip

    # 4. The loop: a step, the budget, and now and then an evaluation with checkpoints.
    parts.model.train()
    while not state.finished():
        lr = _set_learning_rate(parts.optimizer, cfg, state)
        semi = _semi_settings(cfg, state) if unlabelled else None
        loss = _train_step(parts, next(batches), dev, ema_decay=_ema_decay(cfg, state.step + 1), semi=semi)
        state.step += 1
        state.elapsed = time.perf_counter() - started
        _calibrate_budget(state, cfg, ctx, out.progress)
        loss_value = loss.item()
        out.progress.update(state.step, loss=loss_value, lr=lr)
        stopping = bool(stop_after) and state.step >= (stop_after or 0)
        evaluate = _evaluation_due(state, cfg) or state.finished() or stopping
        if evaluate and ctx.is_main:
            score = _evaluate_and_checkpoint(plan, run_dir, parts, val_set, state, started=started)
            out.record(state, loss=loss_value, lr=lr, score=score)
        if evaluate and ctx.enabled:
            _follow_rank0(ctx, state)
        if stopping or (cfg.early_stop_patience and state.stale >= cfg.early_stop_patience):
            break  # asked to stop, or no validation improvement in `early_stop_patience` evaluations
    batches.close()
    out.close()
    result = TrainResult(
        run_dir=run_dir, steps=state.step, best_score=state.best, seconds=state.elapsed, precision=parts.precision.name
    )
    if ctx.is_main:
        result.alignment = _finish(plan, run_dir, parts, val_set, out, dev)
    distributed.barrier(ctx)  # every process leaves together, once rank 0 has written the run
    return result


@dataclass
class _Parts:
    """What the steps need: the model (and its DDP wrapper ``net``), EMA copy, optimiser, loss, precision."""

    model: torch.nn.Module
    net: torch.nn.Module
    ema: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    loss_fn: Callable[..., torch.Tensor]
    precision: PrecisionChoice
    grad_clip: float


def _build_parts(plan: Plan, dev: torch.device, ctx: DistContext) -> _Parts:
    cfg = plan.train
    model = create_model(plan.model.name, **plan.model.kwargs).to(dev)
    precision = choose_precision(cfg.precision, dev, spatial_dims=plan.data.spatial_dims, inference=False)
    if precision.layout is not None:
        model = model.to(memory_format=precision.layout)
    optimizer = build_optimizer(
        model, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, encoder_lr_scale=cfg.encoder_lr_scale
    )
    return _Parts(
        model=model,
        net=distributed.wrap(model, ctx, dev),  # the same module (and parameters) unless distributed
        ema=copy.deepcopy(model).eval() if cfg.ema else None,
        optimizer=optimizer,
        scaler=grad_scaler_for(dev, precision.dtype),  # fp16 on CUDA only
        loss_fn=_loss(plan),
        precision=precision,
        grad_clip=cfg.grad_clip,
    )


def _load_weights(parts: _Parts, folder: Path) -> None:
    """Start from the weights saved in ``folder`` (the model and its EMA copy)."""
    from unetkit.models.base import load_model

    state = load_model(folder).state_dict()
    parts.model.load_state_dict(state)
    if parts.ema is not None:
        parts.ema.load_state_dict(state)


def _batcher(plan: Plan, train_set: list[Example], unlabelled: list[np.ndarray] | None) -> PatchBatcher | SemiBatcher:
    cfg = plan.train
    labelled = PatchBatcher(
        train_set,
        patch_size=tuple(cfg.patch_size),
        batch_size=cfg.batch_size,
        foreground_fraction=cfg.foreground_fraction,
        augment=_augmentation(plan),
        ignore_index=plan.data.ignore_index,
        background=plan.data.background,
    )
    if not unlabelled:
        return labelled
    size = cfg.unlabelled_batch_size or cfg.batch_size
    return SemiBatcher(labelled, UnlabelledBatcher(unlabelled, patch_size=tuple(cfg.patch_size), batch_size=size))


def _write_labelled(run_dir: Path, train_set: list[Example]) -> None:
    """``run_dir/labelled.txt``: the labelled subset's training cases, one key a line (``--labels-file``'s form)."""
    from unetkit._io import write_text_atomic

    write_text_atomic(run_dir / LABELLED_NAME, "".join(f"{e.key}\n" for e in train_set))


def _start_state(plan: Plan, run_dir: Path, parts: _Parts, *, resume: bool, main: bool) -> LoopState:
    """A fresh state (and the plan written into the run), or the saved one with every tensor restored."""
    if resume:
        scalars = load_training_state(
            run_dir, model=parts.model, optimizer=parts.optimizer, ema=parts.ema, grad_scaler=parts.scaler
        )
        return LoopState.from_scalars(scalars)
    if main:
        plan.save(run_dir / "plan.yaml")
    return LoopState(total_steps=plan.train.steps if not plan.train.time_budget_s else 0)


def _note_precision(state: LoopState, precision: PrecisionChoice, progress: Progress | _Silent) -> None:
    progress.note(precision.describe())
    if state.precision and state.precision != precision.name:
        progress.note(f"note: this run trained in {state.precision} before; it continues in {precision.name}, "
                      "so it will not match an uninterrupted run bit for bit")
    state.precision = precision.name


def _set_learning_rate(optimizer: torch.optim.Optimizer, cfg: TrainConfig, state: LoopState) -> float:
    total = state.total_steps or _provisional_total(cfg)
    # Warm-up never takes more than a tenth of the run (short CPU budgets plan only ~100s of steps).
    warmup = min(cfg.warmup_steps, max(total // 10, 1))
    lr = lr_at(state.step, base_lr=cfg.lr, total_steps=total, warmup_steps=warmup, kind=cfg.schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def _train_step(
    parts: _Parts, batch: tuple[torch.Tensor, ...], dev: torch.device, *, ema_decay: float,
    semi: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One optimiser step on ``batch`` (and the EMA update); returns the loss. A batch with unlabelled weak and
    strong views adds the mean teacher's term, ``semi`` = (its weight now, the confidence threshold)."""
    x, y, *views = batch
    x, y = x.to(dev, non_blocking=x.is_pinned()), y.to(dev, non_blocking=y.is_pinned())
    layout = parts.precision.layout
    if layout is not None:
        x = x.contiguous(memory_format=layout)
    if views and semi is not None:
        loss = _semi_supervised_loss(parts, x, y, views, dev, weight=semi[0], threshold=semi[1])
    else:
        with autocast(dev, parts.precision.dtype):
            outputs = parts.net(x)
        loss = parts.loss_fn(_as_float(outputs), y)
    backward_and_step(
        loss, optimizer=parts.optimizer, parameters=list(parts.model.parameters()), grad_clip=parts.grad_clip,
        scaler=parts.scaler,
    )  # fmt: skip
    if parts.ema is not None:
        update_ema(parts.ema, parts.model, decay=ema_decay)
    return loss


def _semi_supervised_loss(
    parts: _Parts, x: torch.Tensor, y: torch.Tensor, views: list[torch.Tensor], dev: torch.device, *,
    weight: float, threshold: float,
) -> torch.Tensor:
    """The labelled loss plus ``weight`` times the unsupervised term: the student sees the labelled patches and the
    strong views in one pass; the teacher (the EMA) labels the weak views (see :mod:`unetkit.train.semisup`)."""
    assert parts.ema is not None  # load_unlabelled_images refuses a plan without the EMA
    weak, strong = (v.to(dev).contiguous(memory_format=parts.precision.layout or torch.contiguous_format) for v in views)
    with autocast(dev, parts.precision.dtype):
        probs = teacher_probabilities(parts.ema, weak)
        outputs = _as_float(parts.net(torch.cat([x, strong])))
    n = x.shape[0]
    labelled = [o[:n] for o in outputs] if isinstance(outputs, list) else outputs[:n]
    student = outputs[0][n:] if isinstance(outputs, list) else outputs[n:]  # full resolution first
    return parts.loss_fn(labelled, y) + weight * unsupervised_loss(student, probs, threshold=threshold)


def _semi_settings(cfg: TrainConfig, state: LoopState) -> tuple[float, float]:
    weight = unsupervised_weight(state.step + 1, total_steps=state.total_steps, weight=cfg.unlabelled_weight,
                                 rampup=cfg.unlabelled_rampup)
    return weight, cfg.unlabelled_threshold


def _calibrate_budget(state: LoopState, cfg: TrainConfig, ctx: DistContext, progress: Any) -> None:
    """A time budget becomes a step count after a short calibration (re-estimated after each evaluation, see
    train/budget.py); the count is stored, so resume is exact. The first steps pay one-off costs, so the pace
    of training steps is measured from step 2, evaluation time excluded."""
    if state.step == 2:
        state.paced_from = [state.step, state.training_seconds()]
    if not state.total_steps and state.step == CALIBRATION_STEPS:
        estimate = first_estimate(
            budget_s=cfg.time_budget_s or 0, elapsed_s=state.elapsed, step=state.step, step_s=state.step_seconds()
        )
        state.total_steps = distributed.broadcast_ints(ctx, [estimate])[0]  # rank 0's pace decides
        progress.set_total(state.total_steps)


def _evaluation_due(state: LoopState, cfg: TrainConfig) -> bool:
    if not state.total_steps:
        return False
    if not state.val_every:
        state.val_every = cfg.val_every or default_val_every(state.total_steps)
    return state.step % state.val_every == 0


def _evaluate_and_checkpoint(
    plan: Plan, run_dir: Path, parts: _Parts, val_set: list[Example], state: LoopState, *, started: float
) -> float:
    """Validate (the EMA copy when there is one), save ``best``/``last``, re-plan the budget, save the state."""
    cfg = plan.train
    eval_started = time.perf_counter()
    scored = parts.ema if parts.ema is not None else parts.model
    precision = parts.precision
    score = _validate(scored, val_set, plan, amp_dtype=precision.dtype, layout=precision.layout) if val_set else float("nan")
    improved = not val_set or score > state.best
    state.stale = 0 if improved else state.stale + 1
    carried = {PLAN_KEY: plan.to_dict()}  # a copied checkpoint folder predicts without the run's plan.yaml
    if improved:
        state.best = score if val_set else state.best
        save_pretrained(scored, run_dir / "best", extra=carried)
    save_pretrained(scored, run_dir / "last", extra=carried)
    state.count_evaluation(seconds=time.perf_counter() - eval_started, now=time.perf_counter() - started)
    if cfg.time_budget_s and not state.finished():
        # The alignment step after the loop costs about one more evaluation: keep time for it.
        reserve = state.eval_s / state.evals if cfg.align and val_set else 0.0
        # An evaluation dearer than the whole budget (a busy machine, a tiny budget) leaves no time: end after the
        # next step rather than pass a budget <= 0 on.
        state.total_steps = state.re_estimate(budget_s=max(cfg.time_budget_s - reserve, 1e-3))
        if not cfg.val_every:  # a first estimate made while loader workers started can be far too low
            state.val_every = max(state.val_every, default_val_every(state.total_steps))
    save_training_state(
        run_dir, model=parts.model, optimizer=parts.optimizer, ema=parts.ema, scalars=state.to_scalars(),
        grad_scaler=parts.scaler,
    )  # fmt: skip
    return score


def _follow_rank0(ctx: DistContext, state: LoopState) -> None:
    """Every process follows rank 0's step count, evaluation interval and early stop."""
    stale = state.stale if ctx.is_main else 0
    state.total_steps, state.val_every, state.stale = distributed.broadcast_ints(
        ctx, [state.total_steps, state.val_every, stale]
    )


def _finish(
    plan: Plan, run_dir: Path, parts: _Parts, val_set: list[Example], out: _Reporters, dev: torch.device
) -> tuple[list[float], float, float] | None:
    """The learning curve, the sub-pixel shift that best fits the validation labels (if one wins clearly,
    see train/align.py) and the validation overlays; returns the alignment."""
    out.log.plot(run_dir / "curve.png")
    amp_dtype, layout = parts.precision.dtype, parts.precision.layout
    alignment = align_predictions(run_dir, val_set, plan, device=dev, amp_dtype=amp_dtype, layout=layout)
    write_validation_overlays(run_dir, val_set, plan, device=dev, amp_dtype=amp_dtype, layout=layout)
    return alignment


@dataclass
class _Reporters:
    """The metrics CSV, TensorBoard (a no-op without the package) and the progress bar; silent off rank 0."""

    log: Any
    tb: Any
    progress: Any

    @classmethod
    def open(cls, run_dir: Path, state: LoopState, *, resume: bool, main: bool) -> _Reporters:
        if not main:
            return cls(_Silent(), _Silent(), _Silent())
        return cls(
            log=MetricsLog(run_dir / "metrics.csv", resume=resume),
            # on resume, TensorBoard events after the resume point are dropped
            tb=TensorBoardLog(run_dir / "tb", purge_step=state.step + 1 if resume else None),
            progress=Progress(total=state.total_steps or None, start=state.step),
        )

    def record(self, state: LoopState, *, loss: float, lr: float, score: float) -> None:
        self.progress.set_total(state.total_steps)
        self.log.write(step=state.step, loss=loss, lr=lr, val_dice=score, elapsed=state.elapsed)
        self.tb.write(step=state.step, loss=loss, lr=lr, val_dice=score)
        self.progress.evaluation(state.step, loss=loss, val_dice=score, best=state.best)

    def close(self) -> None:
        self.progress.close()
        self.tb.close()


def _validate(model: torch.nn.Module, val_set: list[Example], plan: Plan, *, amp_dtype, layout) -> float:  # type: ignore[no-untyped-def]
    classes = output_classes(plan)
    scores = []
    for example in val_set:
        pred = predict_labels(
            model, example.image, tile_size=tuple(plan.train.patch_size), threshold=plan.infer.threshold,
            amp_dtype=amp_dtype, memory_format=layout,
        )  # fmt: skip
        scores.append(
            foreground_dice(
                pred,
                example.mask,
                num_classes=max(classes, 2),
                ignore_index=plan.data.ignore_index,
                background=plan.data.background,
            )
        )
    return float(np.mean(scores))


def _loss(plan: Plan):  # type: ignore[no-untyped-def]
    from unetkit.losses import build_loss, loss_options

    options: dict[str, Any] = {}
    if not plan.data.background and "include_background" in loss_options(plan.train.loss):
        options["include_background"] = True  # class 0 is a real class (a colour table without background)
    return build_loss(plan.train.loss, task=plan.data.task, ignore_index=plan.data.ignore_index, **options)


def _augmentation(plan: Plan):  # type: ignore[no-untyped-def]
    from unetkit.data.transforms import build_augmentation

    if plan.train.augmentation == "none":
        return None
    # Pixels that rotations and shifts bring in from outside the image get the plan's "not labelled" value.
    return build_augmentation(
        plan.train.augmentation, patch_size=tuple(plan.train.patch_size), ignore_index=plan.data.ignore_index
    )


class _Silent:
    """Stands in for the log, TensorBoard and progress bar on ranks other than 0: every call does nothing."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *args, **kwargs: None


def _as_float(outputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if isinstance(outputs, list):
        return [o.float() for o in outputs]
    return outputs.float()


def _ema_decay(cfg: TrainConfig, step: int) -> float:
    return ema_decay_at(step, decay=float(cfg.ema)) if cfg.ema else 0.0


def _provisional_total(cfg) -> int:  # type: ignore[no-untyped-def]
    # Before calibration (the first few steps) any large total gives the warm-up's lr.
    return max(cfg.warmup_steps, CALIBRATION_STEPS) * 1000
