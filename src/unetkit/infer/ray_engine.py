"""Predicting many files on a Ray cluster: a pool of model actors, work handed out as actors free up.

::

    this process (the driver): list inputs, plan outputs --(one file per task)--> actor 1 .. actor N
                               assemble windowed rasters <--(blended chunk outputs)-- (each loads the run once)

Each actor loads the run once (the same :class:`~unetkit.infer.predictor.Predictor`, ONNX / int8 backends
included) and predicts one file per task with :func:`unetkit.infer.files.predict_file`, the code the local
``unetkit predict`` runs for each file, so the outputs are the same files, byte for byte, written where the local
command writes them (every output is written to a temporary name and renamed into place once complete). Work is
handed out dynamically: an actor gets its next file when it has finished one (at most ``in_flight`` queued each),
so a slow or lost worker does not hold back the others, unlike the static shares of ``torchrun`` sharding.

Large rasters (:func:`unetkit.infer.raster.plan_raster`) are cut into ranges of chunks predicted by the actors as
separate tasks; the driver writes the chunks' cores in order into one raster, which equals the local windowed
prediction (each chunk is blended from the same tiles of the global grid, see
:func:`unetkit.infer.tiling.predict_raster_windows`).

Faults: an actor process that dies is restarted by Ray (``max_restarts``) and its unfinished tasks are run again
(``max_task_retries``); a file whose tasks fail that often is reported as failed with the reason. A bad input
(unreadable, corrupt, wrong channels) is reported with the local command's message and the others go on.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit.infer.pipeline import FILE_ERRORS, FileJob, FileOutcome

ADDRESS_HELP = "local (start Ray on this machine for the run), auto (the cluster this machine belongs to) or HOST:PORT"


@dataclass(frozen=True)
class PredictorSpec:
    """How each actor loads its predictor: the arguments of :func:`unetkit.infer.ensemble.load_predictor`.

    Attributes:
        runs: run folders (several: an ensemble).
        checkpoint: ``best`` or ``last``.
        device: ``cpu`` or ``cuda`` (an actor given a GPU by Ray sees it as ``cuda``).
        fast: the fast path (BN folding, channels_last).
        backend: ``auto``, ``torch``, ``onnx`` or ``int8``.
        onnx_path: run this exported graph instead (one run only).
        overrides: inference settings replacing the plan's (``tta``, ``overlap``, ...).
    """

    runs: tuple[str, ...]
    checkpoint: str = "best"
    device: str = "cpu"
    fast: bool = True
    backend: str = "auto"
    onnx_path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The predictor (a :class:`Predictor` or an :class:`EnsemblePredictor`)."""
        from unetkit.infer.ensemble import load_predictor
        from unetkit.infer.predictor import Predictor

        if self.onnx_path is not None:
            return Predictor.from_run(self.runs[0], checkpoint=self.checkpoint, device=self.device, fast=self.fast,
                                      backend="onnx", onnx_path=self.onnx_path, **self.overrides)
        return load_predictor(list(self.runs), checkpoint=self.checkpoint, device=self.device, fast=self.fast,
                              backend=self.backend, **self.overrides)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the pool runs.

    Attributes:
        address: ``local`` (a Ray instance started on this machine for the run and stopped after it), ``auto``
            (the running cluster this machine is part of) or ``HOST:PORT`` of a cluster's head.
        actors: model actors (each loads the run once).
        cpus_per_actor: CPUs Ray reserves for each actor; also its torch threads.
        gpus_per_actor: GPUs (or a fraction) per actor; 0 predicts on CPUs.
        task_retries: times a file is tried again after its actor died.
        in_flight: files queued per actor (the next one waits there while the current one is predicted).
        connect_timeout_s: how long to wait for ``HOST:PORT`` to answer.
        start_timeout_s: how long to wait for the actors to start and load the run (a cluster without room
            for them never places them).
    """

    address: str = "local"
    actors: int = 2
    cpus_per_actor: int = 1
    gpus_per_actor: float = 0.0
    task_retries: int = 3
    in_flight: int = 2
    connect_timeout_s: float = 10.0
    start_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("actors", "cpus_per_actor", "in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_actor < 0 or self.task_retries < 0:
            raise ValueError("--gpus-per-actor and task retries must be >= 0")


@dataclass(frozen=True)
class ActorInfo:
    """What an actor loaded: the predictor's description and the facts the driver needs."""

    describe: str
    spatial_dims: int
    with_uncertainty: bool
    min_size: int
    pid: int
    version: str


class PredictActor:
    """One model in the pool (Ray makes it an actor): loads the run once, then predicts files and raster chunks.

    A run the worker cannot load is not raised here (Ray would print the traceback and restart the actor):
    :meth:`info` reports it, and the driver stops with that message.
    """

    def __init__(self, spec: PredictorSpec, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._predictor, self._error = None, None
        try:
            self._predictor = spec.load()
        except Exception as err:  # whatever stops the load (a corrupt checkpoint too) is said, not raised
            self._error = f"{socket.gethostname()}: {err}"

    def info(self) -> ActorInfo | str:
        """:class:`ActorInfo`, or why the run could not be loaded on this worker."""
        from unetkit import __version__

        if self._predictor is None:
            return str(self._error)
        p = self._predictor
        return ActorInfo(describe=p.describe(), spatial_dims=p.spatial_dims, with_uncertainty=p.with_uncertainty,
                         min_size=int(p.infer.min_size), pid=os.getpid(), version=__version__)

    def predict(self, path: str, targets: dict[str, str]) -> tuple[bool, list[str] | str]:
        """``(True, paths written)`` or ``(False, the error's message)`` for one input."""
        from unetkit.infer.files import predict_file

        try:
            written = predict_file(self._predictor, Path(path), {k: Path(v) for k, v in targets.items()})
        except FILE_ERRORS as err:
            return False, str(err)
        return True, [str(p) for p in written]

    def plan_raster(self, path: str, window: int) -> tuple[bool, Any]:
        """``(True, RasterPlan)`` or ``(False, message)``: :func:`unetkit.infer.raster.plan_raster`."""
        from unetkit.infer.raster import plan_raster

        try:
            return True, plan_raster(self._predictor, path, window=window)
        except FILE_ERRORS as err:
            return False, str(err)

    def predict_chunks(self, plan: Any, chunks: range) -> tuple[bool, Any]:
        """``(True, [(core window, outputs), ...])`` or ``(False, message)`` for a range of a raster's chunks."""
        from unetkit.infer.raster import predict_raster_chunks

        try:
            return True, predict_raster_chunks(self._predictor, plan, chunks)
        except FILE_ERRORS as err:
            return False, str(err)


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ModuleNotFoundError: Ray is not installed (the message says which extra to install).
    """
    try:
        import ray
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("--engine ray needs Ray: pip install 'unetkit[ray]'", name="ray") from err
    return ray


@contextlib.contextmanager
def ray_pool(spec: PredictorSpec, *, options: RayOptions) -> Iterator[RayPool]:
    """Connect to Ray (see :attr:`RayOptions.address`), start the actors and yield the pool; the actors are
    stopped on leaving, and a Ray instance started here is shut down.

    Raises:
        ModuleNotFoundError: Ray is not installed.
        ConnectionError: the address does not answer within ``connect_timeout_s`` or is not a Ray cluster.
        ValueError: the workers cannot load the run (the first worker's reason), or run another unetkit.
    """
    ray = import_ray()
    started = _connect(ray, options)
    actors: list[Any] = []
    try:
        info = _start_actors(ray, spec, options, actors)
        yield RayPool(ray, actors, info, options)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _connect(ray: Any, options: RayOptions) -> bool:
    """Connect (or start Ray for ``local``); True when this call started the connection."""
    address = options.address
    if address not in ("local", "auto"):
        _check_reachable(address, timeout_s=options.connect_timeout_s)
    if ray.is_initialized():  # a caller already connected (e.g. a notebook): its connection is used
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if address == "local":
        kwargs.update(include_dashboard=False, num_cpus=options.actors * options.cpus_per_actor)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ConnectionError(f"cannot connect to Ray at {address}: {str(err).splitlines()[0]}") from err
    return True


def _check_reachable(address: str, *, timeout_s: float) -> None:
    """Fail fast (within ``timeout_s``) when nothing answers at ``HOST:PORT``; Ray itself would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--address {address!r}: expected {ADDRESS_HELP}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ConnectionError(f"cannot reach the Ray cluster at {address} within {timeout_s:g} s: {reason}") from err


def _start_actors(ray: Any, spec: PredictorSpec, options: RayOptions, actors: list[Any]) -> ActorInfo:
    """Start the actors into ``actors``: the first alone (it may export the cached ONNX graph the others then
    find), the rest together; returns the first one's :class:`ActorInfo`."""
    from unetkit._version import __version__

    remote = ray.remote(PredictActor).options(
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor, max_restarts=-1,
        max_task_retries=options.task_retries,
    )  # fmt: skip
    for count in (1, options.actors - 1):
        new = [remote.remote(spec, options.cpus_per_actor) for _ in range(count)]
        actors += new
        for reply in _replies(ray, [actor.info.remote() for actor in new], options=options):
            if isinstance(reply, str):
                raise ValueError(f"a Ray worker cannot load the run: {reply}")
            if reply.version != __version__:
                raise ValueError(f"the Ray workers run unetkit {reply.version}, this process {__version__}; "
                                 "install the same version everywhere")
    return ray.get(actors[0].info.remote())  # type: ignore[no-any-return]


def _replies(ray: Any, refs: list[Any], *, options: RayOptions) -> list[Any]:
    """The actors' first replies, or a clear error when the cluster cannot place them in ``start_timeout_s``."""
    try:
        return ray.get(refs, timeout=options.start_timeout_s)  # type: ignore[no-any-return]
    except ray.exceptions.GetTimeoutError:
        have = ray.cluster_resources()
        raise ValueError(
            f"the Ray actors did not start within {options.start_timeout_s:g} s: {options.actors} actor(s) x "
            f"{options.cpus_per_actor} CPU, {options.gpus_per_actor:g} GPU asked; the cluster has "
            f"{have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU (fewer --actors or --threads?)"
        ) from None


Call = tuple[str, tuple[Any, ...]]


class RayPool:
    """The started actors; :meth:`predict` runs a list of file jobs on them."""

    def __init__(self, ray: Any, actors: list[Any], info: ActorInfo, options: RayOptions) -> None:
        self._ray, self._actors, self.info, self._options = ray, actors, info, options

    def predict(self, jobs: Sequence[FileJob], *, windowed: Callable[[Path], bool] | None = None,
                raster_window: int = 2048) -> Iterator[FileOutcome]:
        """One :class:`FileOutcome` per job, in input order (as :func:`unetkit.infer.pipeline.predict_files`).

        Files are predicted in parallel on the actors, then the inputs ``windowed`` picks one after the other,
        each with its chunks (of about ``raster_window`` pixels a side, as ``window`` of
        :func:`unetkit.infer.raster.predict_raster`) spread over the actors. Temporary files a killed actor left
        are deleted at the end.
        """
        ordered = _InputOrder(len(jobs))
        plain: list[int] = []
        rasters: list[int] = []
        for index, job in enumerate(jobs):
            try:
                if job.error is not None:
                    raise job.error
                (rasters if windowed is not None and windowed(job.path) else plain).append(index)
            except FILE_ERRORS as err:
                ordered.add(index, FileOutcome(job.path, error=err))
        calls = [("predict", (str(jobs[i].path), {k: str(v) for k, v in (jobs[i].targets or {}).items()}))
                 for i in plain]  # fmt: skip
        for position, reply in self._dispatch(calls):
            ordered.add(plain[position], _file_outcome(jobs[plain[position]].path, reply))
            yield from ordered.ready()
        for index in rasters:
            ordered.add(index, self._predict_raster(jobs[index], window=raster_window))
            yield from ordered.ready()
        _remove_temporaries(jobs)

    def _predict_raster(self, job: FileJob, *, window: int) -> FileOutcome:
        from unetkit.infer.raster import RasterTargets, raster_writers

        assert job.targets is not None
        try:
            plan = _unwrap(job.path, next(iter(self._dispatch([("plan_raster", (str(job.path), window))])))[1])
            targets = RasterTargets(mask=job.targets["mask"], prob=job.targets.get("prob"),
                                    uncertainty=job.targets.get("uncertainty"))
            with raster_writers(plan, targets, tta=self.info.with_uncertainty) as write:
                parts = _split(plan.chunks, parts=2 * len(self._actors))
                waiting, next_part = {}, 0
                for position, reply in self._dispatch([("predict_chunks", (plan, part)) for part in parts]):
                    waiting[position] = _unwrap(job.path, reply)
                    while next_part in waiting:  # cores written in chunk order, as the local pass writes them
                        for box, out in waiting.pop(next_part):
                            write(box, out)
                        next_part += 1
        except FILE_ERRORS as err:
            return FileOutcome(job.path, error=err)
        return FileOutcome(job.path, tuple(targets.paths()))

    def _dispatch(self, calls: Sequence[Call]) -> Iterator[tuple[int, Any]]:
        """``(position in calls, reply or the Ray error)`` as the calls finish; each actor has at most
        ``in_flight`` calls queued and gets the next one when it finishes one."""
        ray, pending = self._ray, collections.deque(enumerate(calls))
        running: dict[Any, tuple[int, int]] = {}
        load = [0] * len(self._actors)

        def fill() -> None:
            for slot, actor in enumerate(self._actors):
                while load[slot] < self._options.in_flight and pending:
                    position, (method, args) = pending.popleft()
                    running[getattr(actor, method).remote(*args)] = (position, slot)
                    load[slot] += 1

        fill()
        try:
            while running:
                (ref,), _ = ray.wait(list(running), num_returns=1)
                position, slot = running.pop(ref)
                load[slot] -= 1
                try:
                    reply = ray.get(ref)
                except ray.exceptions.RayError as err:
                    reply = err
                yield position, reply
                fill()
        finally:
            for ref in running:  # a raster given up on: its other chunks are not needed
                ray.cancel(ref)


class _InputOrder:
    """Outcomes handed back in input order, each once it and every one before it are known."""

    def __init__(self, total: int) -> None:
        self._known: dict[int, FileOutcome] = {}
        self._next, self._total = 0, total

    def add(self, index: int, outcome: FileOutcome) -> None:
        self._known[index] = outcome

    def ready(self) -> Iterator[FileOutcome]:
        while self._next in self._known:
            yield self._known.pop(self._next)
            self._next += 1


def _file_outcome(path: Path, reply: Any) -> FileOutcome:
    try:
        return FileOutcome(path, tuple(Path(p) for p in _unwrap(path, reply)))
    except FILE_ERRORS as err:
        return FileOutcome(path, error=err)


def _unwrap(path: Path, reply: Any) -> Any:
    """The value of an actor's ``(ok, value)`` reply; raises its message (a ``ValueError`` naming ``path``
    unless it already does), or a ``RuntimeError`` for a task Ray gave up on (e.g. its actor died too often)."""
    if isinstance(reply, Exception):
        first = next((line for line in str(reply).splitlines() if line.strip()), type(reply).__name__)
        raise RuntimeError(f"{path}: failed on Ray ({type(reply).__name__}): {first.strip()}")
    ok, value = reply
    if ok:
        return value
    raise ValueError(value)


def _split(count: int, *, parts: int) -> list[range]:
    """``range(count)`` cut into at most ``parts`` contiguous ranges of near-equal length."""
    parts = max(1, min(parts, count))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _remove_temporaries(jobs: Sequence[FileJob]) -> None:
    """Delete the temporary files that killed actors left beside the outputs (their files were redone)."""
    from unetkit._io import stale_temporaries

    for job in jobs:
        for target in (job.targets or {}).values():
            for leftover in stale_temporaries(target):
                leftover.unlink(missing_ok=True)
