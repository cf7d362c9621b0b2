"""``unetkit serve RUN [--host 127.0.0.1 --port 8000]``: the run's model over HTTP (FastAPI + uvicorn), with a
web page, an OpenAPI schema (``/docs``) and micro-batching of concurrent requests.

Example client: ``curl --data-binary @slice.png http://127.0.0.1:8000/predict -o mask.png``
(``?format=overlay`` for a PNG overlay, ``?format=json`` for class areas; ``-F file=@slice.png`` works too).
Listening beyond this machine needs ``--api-key`` (or ``UNETKIT_API_KEY``) or ``--insecure-no-auth``.
See :mod:`unetkit.serve.app`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from unetkit.choices import PRECISIONS, TTA_LEVELS
from unetkit.commands._argtypes import add_backend_argument

KEY_VARIABLE = "UNETKIT_API_KEY"
NEEDED = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `unetkit train`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every "
                             "interface, which needs --api-key or --insecure-no-auth)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--api-key", default=None,
                        help=f"clients must send this key (X-API-Key or Authorization: Bearer); default: ${KEY_VARIABLE}. "
                             "The variable keeps the key out of the process list")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve a non-loopback address without a key (anyone who reaches it can use the model)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="which saved model of the run to serve")
    parser.add_argument("--tta", default=None, choices=TTA_LEVELS,
                        help="test-time augmentation (default from the plan; the page then shows an uncertainty map)")
    parser.add_argument("--max-upload-mb", type=float, default=256.0, help="largest accepted upload (default 256)")
    parser.add_argument("--max-megapixels", type=float, default=64.0,
                        help="largest accepted image, in millions of pixels (default 64)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most tiles of concurrent requests in one forward pass (default: twice the plan's "
                             "inference batch size on a CPU, 16 on CUDA)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long the model's worker waits for more tiles to batch (default 5 ms)")
    parser.add_argument("--batching", default="auto", choices=("auto", "on", "off"),
                        help="micro-batch concurrent requests' tiles in one forward pass (auto = on; a lone "
                             "request never waits for others); off: one pass per request batch, for comparison "
                             "(benchmarks/bench_serve.py)")
    parser.add_argument("--no-batching", action="store_true", help="the same as --batching off")
    parser.add_argument("--max-queue", type=int, default=32,
                        help="most predictions waiting or running; more are refused with 503 + Retry-After (default 32)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="longest one prediction may take, queueing included; then 504 (default 120 s)")
    parser.add_argument("--no-fast", action="store_true", help="plain eager fp32 (no BN folding / channels_last)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="what the fast path computes in (default: the plan's infer.precision, auto = bf16 "
                             "where native); printed at start")
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="serve this graph from `unetkit export` of the same run (fp32, or the .int8.onnx of "
                             "`export --int8`) in ONNX Runtime instead of PyTorch")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")
    add_backend_argument(parser)


def missing_extra() -> str | None:
    """The first package of the ``serve`` extra that is not installed, or None."""
    import importlib.util

    for module, package in NEEDED:
        if importlib.util.find_spec(module) is None:
            return package
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _check_args(args: argparse.Namespace, api_key: str | None) -> None:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max-upload-mb and --max-megapixels must be positive")
    if (args.max_batch is not None and args.max_batch < 1) or args.max_wait_ms < 0 or args.max_queue < 1 or args.timeout <= 0:
        raise ValueError("--max-batch and --max-queue must be >= 1, --max-wait-ms >= 0 and --timeout positive")
    if not is_loopback(args.host) and not api_key and not args.insecure_no_auth:
        raise ValueError(
            f"listening on {args.host} lets other machines use the model: pass --api-key KEY (or set "
            f"{KEY_VARIABLE}), or --insecure-no-auth to serve without a key"
        )


def _batching_on(args: argparse.Namespace) -> bool:
    return not (args.no_batching or args.batching == "off")


def default_max_batch(device: str, infer_batch: int) -> int:
    """Tiles per pass when ``--max-batch`` is not given: 16 on CUDA; on a CPU twice a request's own batch, so
    each pass joins about two requests' batches (ISBI, 16 clients on 2 cores with AMX, 2026-12-04: 8 tiles per
    pass served 1.21x one pass per request batch through HTTP, 1.38x called in process; 16 tiles did worse)."""
    return 16 if device.startswith("cuda") else max(1, 2 * int(infer_batch))



def run(args: argparse.Namespace) -> int:
    missing = missing_extra()
    if missing:
        print(f"unetkit serve: {missing} is not installed; install the serve extra: pip install 'unetkit[serve]'",
              file=sys.stderr)  # fmt: skip
        return 1
    api_key = args.api_key or os.environ.get(KEY_VARIABLE) or None
    _check_args(args, api_key)

    from unetkit.infer.predictor import Predictor
    from unetkit.serve import Batching, Limits, SegmentationService
    from unetkit.serve.app import create_app
    from unetkit.serve.server import Server

    overrides = {k: v for k, v in {"tta": args.tta, "precision": args.precision}.items() if v}
    if args.onnx:
        from unetkit.export import check_onnx_matches_run
        from unetkit.run_layout import weights_dir

        check_onnx_matches_run(Path(args.onnx), weights_dir(args.run, args.checkpoint))
        overrides.update(onnx_path=args.onnx)
    else:
        overrides.update(backend=args.backend)
    predictor = Predictor.from_run(args.run, checkpoint=args.checkpoint, device=args.device, fast=not args.no_fast,
                                   **overrides)
    limits = Limits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
                    max_queue=args.max_queue, timeout_s=args.timeout)
    max_batch = args.max_batch or default_max_batch(str(predictor.device), predictor.infer.batch_size)
    batching = Batching(max_batch=max_batch, max_wait_ms=args.max_wait_ms, enabled=_batching_on(args))
    service = SegmentationService(predictor, run_dir=args.run, limits=limits, batching=batching)
    server = Server(create_app(service, api_key=api_key), args.host, args.port)
    if not is_loopback(args.host):
        note = "clients must send the API key" if api_key else "anyone who can reach this machine can use the model"
        print(f"note: listening on {args.host}: {note}", file=sys.stderr)
    print(f"serving {args.run} on {server.url} (Ctrl-C stops)", flush=True)
    print(predictor.describe(), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled once it has shut down
    print("stopped", file=sys.stderr)
    return 0
