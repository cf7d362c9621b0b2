"""``unetkit serve RUN [--host 127.0.0.1 --port 8000]``: the run's model over HTTP, with a small web page.

Example client: ``curl --data-binary @slice.png http://127.0.0.1:8000/predict -o mask.png``
(``?format=overlay`` for a PNG overlay, ``?format=json`` for class pixel counts). See :mod:`unetkit.serve.server`.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `unetkit train`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--tta", default=None, choices=("none", "flips", "d4", "d4+scales"),
                        help="test-time augmentation (default from the plan)")
    parser.add_argument("--max-upload-mb", type=float, default=256.0, help="largest accepted upload (default 256)")
    parser.add_argument("--max-megapixels", type=float, default=64.0,
                        help="largest accepted image, in millions of pixels (default 64)")
    parser.add_argument("--no-fast", action="store_true", help="plain eager fp32 (no BN folding / channels_last)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from unetkit.infer.predictor import Predictor
    from unetkit.serve import Limits, SegmentationService, make_server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max-upload-mb and --max-megapixels must be positive")
    overrides = {"tta": args.tta} if args.tta else {}
    predictor = Predictor.from_run(args.run, checkpoint=args.checkpoint, device=args.device, fast=not args.no_fast,
                                   **overrides)
    limits = Limits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
    server = make_server(SegmentationService(predictor, run_dir=args.run, limits=limits), args.host, args.port)
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the model", file=sys.stderr)
    print(f"serving {args.run} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
