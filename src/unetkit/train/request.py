"""What a person asks ``unetkit train`` for, turned into a plan: the planner's choice, then their changes.

The policy lives here, not in the command: an ``--encoder`` other than the planner's drops the planner's encoder
weights (they belong to its own encoder) and re-derives the learning rates for a pretrained or fresh encoder;
``--set`` overrides beat the planner's learning rates; the labelled subset and the unlabelled images come last. The command only turns
its flags into a :class:`PlanRequest`.

Example:
    >>> request = PlanRequest(data=DataConfig(root="data/"), encoder="resnet18")  # doctest: +SKIP
    >>> plan, samples = plan_for_request(request)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unetkit.config import Plan, apply_overrides

if TYPE_CHECKING:
    from unetkit.data.dataset import LoadedSample
    from unetkit.data.options import DataConfig


@dataclass(frozen=True)
class PlanRequest:
    """A training request: where the plan comes from and what to change in it.

    Attributes:
        data: the data to plan from (None with ``plan_file``).
        plan_file: a plan to load instead of planning from the data.
        device: the device the planner sizes the run for.
        time_budget_s: the training budget in seconds (None: the planner's / the plan's).
        model: a registered model name instead of the planner's.
        encoder: an encoder instead of the planner's (``plain`` = the planner's from-scratch network).
        encoder_weights: a local file or hub name for the encoder's weights.
        precision: ``train.precision``.
        overrides: ``--set key=value`` overrides (checked before any data is read; the planner's learning rates
            never beat them, the explicit model, encoder, precision and budget above do).
        labels: train on this many cases of the training side (``--labels``).
        labels_seed: the seed that draws them.
        labels_file: a file listing the labelled cases (``--labels-file``), instead of ``labels``.
        unlabelled: folders or globs of unlabelled images for semi-supervised training.
    """

    data: DataConfig | None = None
    plan_file: str | None = None
    device: str = "cpu"
    time_budget_s: float | None = None
    model: str | None = None
    encoder: str | None = None
    encoder_weights: str | None = None
    precision: str | None = None
    overrides: tuple[str, ...] = ()
    labels: int | None = None
    labels_seed: int | None = None
    labels_file: str | None = None
    unlabelled: tuple[str, ...] = ()


def plan_for_request(request: PlanRequest) -> tuple[Plan, list[LoadedSample] | None]:
    """The plan of a training request, and the samples read while planning from the data.

    The samples are the dataset check's single pass, which the fingerprint used too; None with a plan file,
    when the check found errors (the trainer then reports them), or when an override changed how the files are
    read.

    Args:
        request: what was asked for.

    Returns:
        ``(plan, samples)``.

    Raises:
        ValueError: a bad override (checked before any data is read), bad labelled-subset options.
    """
    from unetkit.data.options import same_reading
    from unetkit.train.plan import plan_from_data
    from unetkit.train.setup import DatasetError, checked_samples

    apply_overrides(Plan(), list(request.overrides))  # a typo must not cost a dataset load
    samples: list[LoadedSample] | None = None
    if request.plan_file:
        plan = Plan.load(request.plan_file)
    else:
        if request.data is None:
            raise ValueError("a training request needs data to plan from, or a plan file")
        # `--encoder plain` asks for the planner's from-scratch network (its depth and width), not just another name.
        pretrained = False if request.encoder == "plain" else None
        try:
            samples = checked_samples(request.data)
        except DatasetError:
            samples = None  # planned as before (its error names the first bad file), or the trainer's check reports
        plan = plan_from_data(request.data, device=request.device, time_budget_s=request.time_budget_s,
                              pretrained=pretrained, loaded=samples)  # fmt: skip
    plan = apply_overrides(plan, list(request.overrides) + _model_overrides(plan, request))
    plan = _with_labels(plan, request)
    if request.unlabelled:
        from unetkit.train.semisup import with_unlabelled

        plan = with_unlabelled(plan, list(request.unlabelled))
    if samples is not None and request.data is not None and not same_reading(plan.data, request.data):
        samples = None
    return plan, samples


def _model_overrides(plan: Plan, request: PlanRequest) -> list[str]:
    """The request's model, encoder, precision and budget as overrides; changes ``plan`` in place where the
    planner's own choices no longer hold (its encoder weights, its learning rates, its reason)."""
    from unetkit.train.plan import optimiser_settings

    overrides = []
    if request.model:
        overrides.append(f"model.name={request.model}")
    if request.encoder:
        overrides.append(f"model.kwargs.encoder={request.encoder}")
        if not request.plan_file and request.encoder != "plain":
            plan.model.reason = f"encoder {request.encoder} chosen on the command line (--encoder)"
        if not request.encoder_weights:
            plan.model.kwargs.pop("encoder_weights", None)  # the planner's weights belong to its own encoder
    if request.encoder_weights:
        overrides.append(f"model.kwargs.encoder_weights={request.encoder_weights}")
    if (request.encoder or request.encoder_weights) and not request.plan_file:
        # The planner's learning rates depend on whether the encoder starts pretrained; overrides still win.
        pretrained = bool(request.encoder_weights) or "encoder_weights" in plan.model.kwargs
        plan.train = dataclasses.replace(plan.train, **optimiser_settings(pretrained=pretrained))
    if request.precision:
        overrides.append(f"train.precision={request.precision}")
    if request.time_budget_s is not None and request.plan_file:
        overrides.append(f"train.time_budget_s={request.time_budget_s}")
    return overrides


def _with_labels(plan: Plan, request: PlanRequest) -> Plan:
    """The labelled-subset options into the plan's ``train.labels*`` fields."""
    from unetkit.data.splits import read_key_list

    if request.labels and request.labels_file:
        raise ValueError("--labels N and --labels-file LIST choose the labelled cases in two ways; give one")
    changes: dict[str, Any] = {}
    if request.labels:
        changes.update(labels=request.labels, labels_keys=[])
    if request.labels_seed is not None:
        changes["labels_seed"] = request.labels_seed
    if request.labels_file:
        keys = read_key_list(request.labels_file)
        if not keys:
            raise ValueError(f"{request.labels_file}: the labelled list is empty")
        changes.update(labels=0, labels_keys=keys)
    return dataclasses.replace(plan, train=dataclasses.replace(plan.train, **changes)) if changes else plan


__all__ = ["PlanRequest", "plan_for_request"]
