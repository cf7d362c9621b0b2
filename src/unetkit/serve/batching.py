"""Micro-batching: one worker thread owns the network; the tiles of concurrent requests share its forward passes.

Each request runs its own sliding-window loop (and TTA) in its own thread, with a tile function from
:meth:`MicroBatcher.tile_fn`. A call puts its batch of tiles on a queue and waits. The worker takes the
first waiting batch, then for up to ``max_wait_s`` more gathers batches of the same shape and dtype until
``max_batch`` tiles are collected, runs the network once on their concatenation and hands every caller its
own rows. A batch of another shape waits for the next pass; a batch larger than ``max_batch`` runs alone.

Callers that announce themselves (:meth:`MicroBatcher.caller`, as every request of the service does) let the
worker stop waiting as soon as each of them has a batch in the pass: a request's batches come one after the
other, so a lone request never waits, and N requests wait only until all N have sent their next batch.

With ``batching=False`` every batch gets a forward pass of its own (still in the worker thread): the same
threads and queue, so comparing the two measures the batching alone.

A call that is not answered by its deadline raises :class:`TimeoutError`; the worker drops batches whose
caller has given up. The queue holds at most one batch per waiting request thread, so bounding the number of
requests in flight (see :class:`~unetkit.serve.service.SegmentationService`) bounds it.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass(eq=False)
class _Job:
    """One caller's batch of tiles and the slot its answer comes back in."""

    batch: torch.Tensor
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None
    abandoned: bool = False

    @property
    def size(self) -> int:
        return int(self.batch.shape[0])

    @property
    def key(self) -> tuple:
        return (tuple(self.batch.shape[1:]), self.batch.dtype, self.batch.device)

    def finish(self, result: torch.Tensor | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass
class BatchStats:
    """Counters since start: forward ``passes``, ``tiles`` through them, ``largest`` batch, ``dropped`` late jobs."""

    passes: int = 0
    tiles: int = 0
    largest: int = 0
    dropped: int = 0


class MicroBatcher:
    """Runs ``network`` in one worker thread on the gathered tiles of concurrent callers."""

    def __init__(self, network: Network, *, max_batch: int = 16, max_wait_s: float = 0.005,
                 batching: bool = True) -> None:  # fmt: skip
        """Args:
            network: normalised tiles ``(B, C, *tile)`` -> ``(B, K, *tile)``; only the worker thread calls it.
            max_batch: most tiles in one forward pass (a single larger batch still runs, alone).
            max_wait_s: how long the worker waits for more tiles after the first batch arrived.
            batching: False: one forward pass per caller's batch, never concatenated.

        Raises:
            ValueError: ``max_batch`` below 1 or a negative ``max_wait_s``.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.network = network
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.batching = bool(batching)
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: collections.deque[_Job] = collections.deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._callers: int | None = None  # announced callers (None: nobody announces, wait max_wait_s)

    # -- callers ---------------------------------------------------------------------------------
    def tile_fn(self, *, deadline: float | None = None) -> Network:
        """A tile function for one request: its calls are answered by the worker or raise :class:`TimeoutError`
        once ``time.monotonic()`` passes ``deadline`` (None: wait as long as it takes)."""
        return lambda batch: self.run(batch, deadline=deadline)

    @contextlib.contextmanager
    def caller(self) -> Iterator[None]:
        """Announce one caller (a request) for the block, so the worker knows how many batches may still come."""
        with self._lock:
            self._callers = (self._callers or 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._callers = (self._callers or 1) - 1

    def run(self, batch: torch.Tensor, *, deadline: float | None = None) -> torch.Tensor:
        """The network's output for ``batch``, computed by the worker thread (see :meth:`tile_fn`).

        Raises:
            TimeoutError: no answer by ``deadline``.
            RuntimeError: the batcher is closed.
            Exception: whatever the network raised for the pass that held this batch.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
        if self._thread is None:
            self.start()
        job = _Job(batch=batch, deadline=deadline)
        self._queue.put(job)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not job.done.wait(timeout):
            job.abandoned = True  # the worker skips it if it has not started it yet
            raise TimeoutError("no answer from the model before the request's deadline")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread; nothing when it runs, a fresh worker after :meth:`close` (an application's
        lifespan may start and stop the same service more than once)."""
        with self._lock:
            if self._closed and self._thread is not None and self._thread.is_alive():
                raise RuntimeError("the micro-batcher's previous worker has not stopped yet")
            if self._closed:
                self._closed, self._thread = False, None
                self._queue, self._held = queue.Queue(), collections.deque()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="unetkit-batcher", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the batch in progress; waiting callers get a RuntimeError, and so do new
        ones until :meth:`start` is called again."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._queue.put(None)
        if thread is not None:
            thread.join(timeout)
        if thread is None or not thread.is_alive():  # else the worker fails them itself once its pass ends
            self._fail_waiting(RuntimeError("the service is shutting down"))

    # -- worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        with torch.inference_mode():
            while not self._closed:
                group = self._gather()
                if group is None:
                    break
                if self._closed:
                    for job in group:
                        self._held.append(job)
                    break
                self._run_group(group)
        self._fail_waiting(RuntimeError("the service is shutting down"))

    def _next(self, until: float | None) -> _Job | None:
        """The next live job (held ones first), dropping those whose caller gave up; None: the stop signal.

        Raises:
            queue.Empty: none arrived before ``until`` (``time.monotonic()``; None waits for ever).
        """
        while True:
            job: _Job | None
            if self._held:
                job = self._held.popleft()
            else:
                job = self._queue.get(timeout=None if until is None else max(0.0, until - time.monotonic()))
            if job is None:
                return None
            if not job.abandoned and (job.deadline is None or time.monotonic() <= job.deadline):
                return job
            self.stats.dropped += 1
            job.finish(error=TimeoutError("no answer from the model before the request's deadline"))

    def _gather(self) -> list[_Job] | None:
        """Block for a first live job, then add compatible ones until full or ``max_wait_s`` passed."""
        first = self._next(None)
        if first is None:
            return None
        group, size = [first], first.size
        until = time.monotonic() + self.max_wait_s
        while self.batching and size < self.max_batch:
            callers = self._callers
            if callers is not None and len(group) >= callers and not self._held and self._queue.empty():
                break  # every announced caller is in this pass: nothing else can come
            try:
                job = self._next(until)
            except queue.Empty:
                break
            if job is None:  # stop once this pass is done
                self._queue.put(None)
                break
            if job.key != first.key or size + job.size > self.max_batch:
                self._held.appendleft(job)  # first in the next pass
                break
            group.append(job)
            size += job.size
        return group

    def _run_group(self, group: list[_Job]) -> None:
        try:
            batch = group[0].batch if len(group) == 1 else torch.cat([job.batch for job in group])
            out = self.network(batch)
            if not isinstance(out, torch.Tensor) or out.shape[0] != batch.shape[0]:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"the network returned {got} for a batch of {batch.shape[0]} tiles")
            parts = out.split([job.size for job in group])
        except Exception as err:  # noqa: BLE001 - every caller of this pass gets the network's error
            for job in group:
                job.finish(error=err)
            return
        self.stats.passes += 1
        self.stats.tiles += int(batch.shape[0])
        self.stats.largest = max(self.stats.largest, int(batch.shape[0]))
        for job, part in zip(group, parts, strict=True):
            job.finish(result=part)

    def _fail_waiting(self, error: BaseException) -> None:
        while self._held:
            self._held.popleft().finish(error=error)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.finish(error=error)
