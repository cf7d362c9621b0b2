"""The micro-batcher: concurrent callers share forward passes, each gets exactly its own rows back, and
deadlines, errors, shapes and shutdown are handled per caller."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _serve_helpers import exact_predictor, isbi_crop

from unetkit.serve.batching import MicroBatcher


class Recorder:
    """A network that remembers each pass's batch size; row i of the output is ``10 * x[i]`` (plus a channel).
    With a ``gate`` every pass first sets :attr:`entered` and waits for the gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(batch.shape[0]))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return torch.cat([batch * 10, batch + 1], dim=1)


def call_together(batcher: MicroBatcher, batches: list[torch.Tensor], **kwargs: object) -> list[object]:
    """Every batch sent from its own thread, all released at once; returns each thread's answer or error."""
    answers: list[object] = [None] * len(batches)
    start = threading.Barrier(len(batches))

    def call(i: int) -> None:
        start.wait()
        try:
            answers[i] = batcher.run(batches[i], **kwargs)
        except Exception as err:  # noqa: BLE001 - the test looks at it
            answers[i] = err

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def test_concurrent_callers_share_one_pass_and_get_their_own_rows() -> None:
    network = Recorder()
    batcher = MicroBatcher(network, max_batch=8, max_wait_s=2.0)  # long wait: all four arrive in time
    batches = [torch.full((2, 1, 4, 4), float(i)) for i in range(4)]
    answers = call_together(batcher, batches)
    batcher.close()
    assert network.sizes == [8]  # full at 8 tiles: it did not wait the 2 s out
    for i, answer in enumerate(answers):
        assert isinstance(answer, torch.Tensor) and answer.shape == (2, 2, 4, 4)
        torch.testing.assert_close(answer, torch.cat([batches[i] * 10, batches[i] + 1], dim=1), rtol=0, atol=0)
    assert batcher.stats.passes == 1 and batcher.stats.largest == 8 and batcher.stats.tiles == 8


def test_announced_callers_do_not_wait_for_batches_that_cannot_come() -> None:
    network = Recorder()
    batcher = MicroBatcher(network, max_batch=64, max_wait_s=3.0)
    started = time.monotonic()
    with batcher.caller():  # a lone request: its next batch only comes after this one's answer
        for _ in range(3):
            batcher.run(torch.zeros(2, 1, 4, 4))
    assert time.monotonic() - started < 1.5 and network.sizes == [2, 2, 2]
    gate = threading.Barrier(3)

    def request(i: int) -> None:
        with batcher.caller():
            gate.wait()
            batcher.run(torch.full((2, 1, 4, 4), float(i)))
            gate.wait()  # every caller stays announced until all have their answer

    started = time.monotonic()
    threads = [threading.Thread(target=request, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    assert network.sizes[3:] == [6] and time.monotonic() - started < 2.5  # all three in, no 3 s wait


def test_without_batching_every_batch_has_its_own_pass() -> None:
    network = Recorder()
    batcher = MicroBatcher(network, max_batch=8, max_wait_s=2.0, batching=False)
    answers = call_together(batcher, [torch.full((2, 1, 4, 4), float(i)) for i in range(4)])
    batcher.close()
    assert network.sizes == [2, 2, 2, 2] and all(isinstance(a, torch.Tensor) for a in answers)


def test_max_batch_and_shapes_bound_what_is_concatenated() -> None:
    gate = threading.Event()
    network = Recorder(gate)
    batcher = MicroBatcher(network, max_batch=4, max_wait_s=5.0)  # every pass below ends before the wait does
    first = threading.Thread(target=batcher.run, args=(torch.zeros(4, 1, 4, 4),))
    first.start()
    assert network.entered.wait(10)  # the worker is held in this pass while the others queue up in order
    batches = [torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(2, 1, 8, 8),
               torch.zeros(6, 1, 4, 4)]
    threads = []
    for batch in batches:
        threads.append(threading.Thread(target=batcher.run, args=(batch,)))
        threads[-1].start()
        while batcher._queue.qsize() < len(threads):
            time.sleep(0.001)
    gate.set()
    for t in [first, *threads]:
        t.join(30)
    batcher.close()
    # 3 + 3 > 4 tiles; 3 + 1 fit; 8x8 tiles never join 4x4 ones; a batch of 6 > max_batch runs alone.
    assert network.sizes == [4, 3, 4, 2, 6]


def test_a_caller_past_its_deadline_gets_a_timeout_and_its_tiles_are_dropped() -> None:
    gate = threading.Event()
    network = Recorder(gate)
    batcher = MicroBatcher(network, max_batch=8, max_wait_s=0.0)
    blocker = threading.Thread(target=batcher.run, args=(torch.zeros(1, 1, 4, 4),))
    blocker.start()
    time.sleep(0.05)  # the worker is now stuck at the gate
    with pytest.raises(TimeoutError, match="before the request's deadline"):
        batcher.run(torch.zeros(2, 1, 4, 4), deadline=time.monotonic() + 0.1)
    gate.set()
    blocker.join(10)
    assert batcher.run(torch.ones(1, 1, 4, 4)).shape == (1, 2, 4, 4)  # the worker goes on
    batcher.close()
    assert network.sizes == [1, 1] and batcher.stats.dropped == 1


def test_a_network_error_reaches_every_caller_of_that_pass() -> None:
    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory (simulated)")

    batcher = MicroBatcher(broken, max_batch=8, max_wait_s=1.0)
    answers = call_together(batcher, [torch.zeros(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)])
    batcher.close()
    assert all(isinstance(a, RuntimeError) and "simulated" in str(a) for a in answers)


def test_close_fails_waiting_callers_and_refuses_new_ones() -> None:
    gate = threading.Event()
    batcher = MicroBatcher(Recorder(gate), max_batch=1, max_wait_s=0.0)
    answers: list[object] = []

    def call() -> None:
        try:
            answers.append(batcher.run(torch.zeros(1, 1, 4, 4)))
        except RuntimeError as err:
            answers.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(10)
    for t in threads:
        t.join(10)
    assert sum(isinstance(a, torch.Tensor) for a in answers) == 1  # the pass in progress finishes
    assert sum(isinstance(a, RuntimeError) and "shutting down" in str(a) for a in answers) == 2
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run(torch.zeros(1, 1, 4, 4))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s must be >= 0"):
        MicroBatcher(Recorder(), max_wait_s=-1)


def test_batched_requests_predict_what_the_predictor_alone_predicts(run_2d: Path) -> None:
    """Real sliding windows from four threads through one batcher (fp32): the same probabilities as alone."""
    predictor = exact_predictor(run_2d)
    batcher = MicroBatcher(predictor.network, max_batch=16, max_wait_s=0.05)
    images = [isbi_crop()[None].astype(np.float32), isbi_crop()[None, ::-1, :120].astype(np.float32).copy()] * 2
    out: list[object] = [None] * 4
    start = threading.Barrier(4)

    def predict(i: int) -> None:
        start.wait()
        out[i] = predictor.with_network(batcher.tile_fn())(images[i])

    threads = [threading.Thread(target=predict, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batcher.close()
    assert batcher.stats.largest > predictor.infer.batch_size  # requests did share passes
    for i in range(4):
        alone = predictor(images[i])
        np.testing.assert_allclose(out[i].probabilities, alone.probabilities, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out[i].labels, alone.labels)
