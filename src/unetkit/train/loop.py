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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unetkit.config import Plan
from unetkit.data.splits import LabelledSubset
from unetkit.models.base import save_pretrained
from unetkit.models.factory import create_model
from unetkit.precision import autocast, backward_and_step, choose_precision, grad_scaler_for
from unetkit.train import distributed
from unetkit.train.align import align_predictions
from unetkit.train.batches import Example, PatchBatcher
from unetkit.train.budget import default_val_every, first_estimate, re_estimate
from unetkit.train.checkpoint import load_training_state, save_training_state
from unetkit.train.evaluation import foreground_dice, predict_labels
from unetkit.train.logging import MetricsLog, Progress, TensorBoardLog
from unetkit.train.overlays import write_validation_overlays
from unetkit.train.prefetch import BatchStream
from unetkit.train.schedule import ema_decay_at, lr_at
from unetkit.train.setup import build_optimizer, load_examples, prepare_run_dir, split_examples

CALIBRATION_STEPS = 8


@dataclass
class TrainResult:
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
) -> TrainResult:
    """Train ``plan`` into ``run_dir``; ``stop_after`` ends early after that many steps (for tests)."""
    cfg = plan.train
    ctx = distributed.context_from_env()
    dev = distributed.setup(ctx, device)
    if ctx.is_main:
        run_dir = prepare_run_dir(Path(run_dir), resume=resume, overwrite=overwrite)
    distributed.barrier(ctx)
    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)

    # 1. Data: checked, loaded, split by group, normalised; a patch batcher with augmentation.
    examples, groups = load_examples(plan.data)
    train_set, val_set = split_examples(
        examples, groups, val_fraction=cfg.val_fraction, seed=cfg.seed, folds=cfg.folds, fold=cfg.fold,
        labelled=LabelledSubset.of(cfg),  # train --labels / --labels-file: a subset of the training side
    )
    batcher = PatchBatcher(
        train_set,
        patch_size=tuple(cfg.patch_size),
        batch_size=cfg.batch_size,
        foreground_fraction=cfg.foreground_fraction,
        augment=_augmentation(plan),
        ignore_index=plan.data.ignore_index,
        background=plan.data.background,
    )

    # 2. Model, optimiser, loss, precision.
    model = create_model(plan.model.name, **plan.model.kwargs).to(dev)
    precision = choose_precision(cfg.precision, dev, spatial_dims=plan.data.spatial_dims, inference=False)
    amp_dtype, layout = precision.dtype, precision.layout
    if layout is not None:
        model = model.to(memory_format=layout)
    ema = copy.deepcopy(model).eval() if cfg.ema else None
    scaler = grad_scaler_for(dev, amp_dtype)  # fp16 on CUDA only
    optimizer = build_optimizer(
        model, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, encoder_lr_scale=cfg.encoder_lr_scale
    )
    loss_fn = _loss(plan)
    net = distributed.wrap(model, ctx, dev)  # the same module (and parameters) unless distributed

    # 3. Fresh start or exact resume.
    state = {
        "step": 0,
        "total_steps": cfg.steps if not cfg.time_budget_s else 0,
        "best": -1.0,
        "elapsed": 0.0,
    }
    if resume:
        state = load_training_state(run_dir, model=model, optimizer=optimizer, ema=ema, grad_scaler=scaler)
    elif ctx.is_main:
        plan.save(run_dir / "plan.yaml")
    main = ctx.is_main  # only rank 0 logs, shows progress and writes files
    log = MetricsLog(run_dir / "metrics.csv", resume=resume) if main else _Silent()
    # TensorBoard scalars when the package is installed (else a no-op); on resume, later events are dropped.
    tb = TensorBoardLog(run_dir / "tb", purge_step=state["step"] + 1 if resume else None) if main else _Silent()
    progress = Progress(total=state["total_steps"] or None, start=state["step"]) if main else _Silent()
    progress.note(precision.describe())
    if state.setdefault("precision", precision.name) != precision.name:
        progress.note(f"note: this run trained in {state['precision']} before; it continues in {precision.name}, "
                      "so it will not match an uninterrupted run bit for bit")
        state["precision"] = precision.name
    started = time.perf_counter() - state["elapsed"]
    pin = dev.type == "cuda"
    batches = BatchStream(
        batcher, seed=cfg.seed, start=state["step"], workers=cfg.workers, pin_memory=pin, rank=ctx.rank
    )

    # 4. The loop.
    model.train()
    while state["total_steps"] == 0 or state["step"] < state["total_steps"]:
        step = state["step"]
        total_for_lr = state["total_steps"] or _provisional_total(cfg)
        # Warm-up never takes more than a tenth of the run (short CPU budgets plan only ~100s of steps).
        warmup = min(cfg.warmup_steps, max(total_for_lr // 10, 1))
        lr = lr_at(step, base_lr=cfg.lr, total_steps=total_for_lr, warmup_steps=warmup, kind=cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

        x, y = next(batches)
        x, y = x.to(dev, non_blocking=x.is_pinned()), y.to(dev, non_blocking=y.is_pinned())
        if layout is not None:
            x = x.contiguous(memory_format=layout)
        with autocast(dev, amp_dtype):
            outputs = net(x)
        loss = loss_fn(_as_float(outputs), y)
        params = list(model.parameters())
        backward_and_step(
            loss, optimizer=optimizer, parameters=params, grad_clip=cfg.grad_clip, scaler=scaler
        )
        if ema is not None:
            _update_ema(ema, model, decay=ema_decay_at(step + 1, decay=float(cfg.ema)))
        state["step"] = step = step + 1
        state["elapsed"] = time.perf_counter() - started

        # A time budget becomes a step count after a short calibration, re-estimated after each evaluation
        # (see train/budget.py); the count is stored, so resume is exact. The first steps pay one-off costs,
        # so the pace of training steps is measured from step 2, evaluation time excluded.
        if step == 2:
            state["paced_from"] = [step, _training_seconds(state)]
        if not state["total_steps"] and step == CALIBRATION_STEPS:
            estimate = first_estimate(
                budget_s=cfg.time_budget_s or 0,
                elapsed_s=state["elapsed"],
                step=step,
                step_s=_step_seconds(state),
            )
            state["total_steps"] = distributed.broadcast_ints(ctx, [estimate])[0]  # rank 0's pace decides
            progress.set_total(state["total_steps"])
        loss_value = loss.item()
        progress.update(step, loss=loss_value, lr=lr)

        done = bool(state["total_steps"]) and step >= state["total_steps"]
        if state["total_steps"] and not state.get("val_every"):
            state["val_every"] = cfg.val_every or default_val_every(state["total_steps"])
        due = bool(state["total_steps"]) and step % state.get("val_every", 1) == 0
        if (due or done or (stop_after and step >= stop_after)) and main:
            eval_started = time.perf_counter()
            scored = ema if ema is not None else model
            score = (
                _validate(scored, val_set, plan, amp_dtype=amp_dtype, layout=layout)
                if val_set
                else float("nan")
            )
            improved = not val_set or score > state["best"]
            state["stale"] = 0 if improved else state.get("stale", 0) + 1
            if improved:
                state["best"] = score if val_set else state["best"]
                save_pretrained(scored, run_dir / "best")
            save_pretrained(scored, run_dir / "last")
            _account_evaluation(
                state, seconds=time.perf_counter() - eval_started, now=time.perf_counter() - started
            )
            if cfg.time_budget_s and not done:
                # The alignment step after the loop costs about one more evaluation: keep time for it.
                reserve = state["eval_s"] / state["evals"] if cfg.align and val_set else 0.0
                state["total_steps"] = _re_estimate(state, budget_s=cfg.time_budget_s - reserve)
                if not cfg.val_every:  # a first estimate made while loader workers started can be far too low
                    state["val_every"] = max(state["val_every"], default_val_every(state["total_steps"]))
                progress.set_total(state["total_steps"])
            save_training_state(
                run_dir, model=model, optimizer=optimizer, ema=ema, scalars=state, grad_scaler=scaler
            )
            log.write(step=step, loss=loss_value, lr=lr, val_dice=score, elapsed=state["elapsed"])
            tb.write(step=step, loss=loss_value, lr=lr, val_dice=score)
            progress.evaluation(step, loss=loss_value, val_dice=score, best=state["best"])
        if ctx.enabled and (due or done or (stop_after and step >= stop_after)):
            # Every process follows rank 0's step count, evaluation interval and early stop.
            stale = state.get("stale", 0) if main else 0
            state["total_steps"], state["val_every"], state["stale"] = distributed.broadcast_ints(
                ctx, [state["total_steps"], state.get("val_every", 0), stale]
            )
        if stop_after and step >= stop_after:
            break
        if cfg.early_stop_patience and state.get("stale", 0) >= cfg.early_stop_patience:
            break  # no validation improvement in `early_stop_patience` evaluations

    batches.close()
    progress.close()
    tb.close()
    if not main:
        return TrainResult(run_dir=run_dir, steps=state["step"], best_score=state["best"], seconds=state["elapsed"],
                           precision=precision.name)
    log.plot(run_dir / "curve.png")

    # 5. Move predictions by the sub-pixel shift that best fits the validation labels, if one wins clearly.
    alignment = align_predictions(run_dir, val_set, plan, device=dev, amp_dtype=amp_dtype, layout=layout)
    write_validation_overlays(run_dir, val_set, plan, device=dev, amp_dtype=amp_dtype, layout=layout)
    return TrainResult(
        run_dir=run_dir, steps=state["step"], best_score=state["best"], seconds=state["elapsed"],
        alignment=alignment, precision=precision.name,
    )


def _validate(model: torch.nn.Module, val_set: list[Example], plan: Plan, *, amp_dtype, layout) -> float:  # type: ignore[no-untyped-def]
    classes = int(plan.model.kwargs.get("classes", 2))
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

    options = {}
    if not plan.data.background and "include_background" in loss_options(plan.train.loss):
        options["include_background"] = True  # class 0 is a real class (a colour table without background)
    return build_loss(plan.train.loss, task=plan.data.task, ignore_index=plan.data.ignore_index, **options)


def _augmentation(plan: Plan):  # type: ignore[no-untyped-def]
    from unetkit.data.transforms import build_augmentation

    if plan.train.augmentation == "none":
        return None
    return build_augmentation(plan.train.augmentation, patch_size=tuple(plan.train.patch_size))


class _Silent:
    """Stands in for the log, TensorBoard and progress bar on ranks other than 0: every call does nothing."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *args, **kwargs: None


def _as_float(outputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if isinstance(outputs, list):
        return [o.float() for o in outputs]
    return outputs.float()


def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, *, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            else:
                e.copy_(p)


def _provisional_total(cfg) -> int:  # type: ignore[no-untyped-def]
    # Before calibration (the first few steps) any large total gives the warm-up's lr.
    return max(cfg.warmup_steps, CALIBRATION_STEPS) * 1000


def _account_evaluation(state: dict, *, seconds: float, now: float) -> None:
    """Count one evaluation (validation + checkpoints) of ``seconds``; the run's clock is now ``now``."""
    state["eval_s"] = state.get("eval_s", 0.0) + seconds
    state["evals"] = state.get("evals", 0) + 1
    state["elapsed"] = now


def _re_estimate(state: dict, *, budget_s: float) -> int:
    return re_estimate(
        budget_s=budget_s,
        elapsed_s=state["elapsed"],
        step=state["step"],
        step_s=_step_seconds(state),
        eval_s=state["eval_s"] / state["evals"],
        val_every=state["val_every"],
    )


def _training_seconds(state: dict) -> float:
    """Wall time spent on training steps so far (evaluations and checkpoints excluded)."""
    return float(state["elapsed"]) - float(state.get("eval_s", 0.0))


def _step_seconds(state: dict) -> float:
    """Seconds per training step since ``state["paced_from"]`` (step 2; a run resumed before it: its start)."""
    start_step, start_s = state.get("paced_from", (0, 0.0))
    return (_training_seconds(state) - start_s) / max(state["step"] - start_step, 1)
