"""``unetkit label-studio RUN --label-studio-url URL``: the run as a Label Studio ML backend (connect it in the
project's Model settings, or through the API, at this server's URL).

Label Studio's URL and API key come from ``--label-studio-url`` / ``--label-studio-key`` or the
``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` variables, never from a request. Listening beyond this
machine needs ``--api-key`` (or ``UNETKIT_API_KEY``) or ``--insecure-no-auth``, as for ``unetkit serve``.
See :mod:`unetkit.serve.label_studio`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from unetkit.commands.serve import KEY_VARIABLE, is_loopback, missing_extra

URL_VARIABLE = "LABEL_STUDIO_URL"
TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `unetkit train`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090, Label Studio's usual; 0 picks one)")
    parser.add_argument("--label-studio-url", default=None,
                        help=f"Label Studio's base URL, where task images are fetched (default: ${URL_VARIABLE})")
    parser.add_argument("--label-studio-key", default=None,
                        help=f"Label Studio API key (legacy token) for fetching images (default: ${TOKEN_VARIABLE}; "
                             "the variable keeps it out of the process list)")
    parser.add_argument("--api-key", default=None,
                        help=f"Label Studio (or any client) must send this key: X-API-Key, Bearer, or the basic-auth "
                             f"password of the ML backend's settings; default: ${KEY_VARIABLE}")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="listen on a non-loopback address without a key")
    parser.add_argument("--tta", default="flips", choices=("flips", "d4", "d4+scales"),
                        help="TTA views behind each prediction's uncertainty score (as `suggest --tta`)")
    parser.add_argument("--train-every", type=int, default=0,
                        help="fine-tune after this many new annotations (default 0: only on Label Studio's "
                             "start-training event)")
    parser.add_argument("--time-budget", default="5m", help="each fine-tune's training time, e.g. 90s, 5m (default 5m)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train each fine-tune for exactly this many optimiser steps instead of --time-budget")
    parser.add_argument("--max-upload-mb", type=float, default=256.0, help="largest task image fetched (default 256)")
    parser.add_argument("--max-megapixels", type=float, default=64.0, help="largest task image, in megapixels (default 64)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")


def _settings(args: argparse.Namespace) -> tuple[str, str, str | None]:
    url = args.label_studio_url or os.environ.get(URL_VARIABLE) or ""
    token = args.label_studio_key or os.environ.get(TOKEN_VARIABLE) or ""
    api_key = args.api_key or os.environ.get(KEY_VARIABLE) or None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--label-studio-url (or {URL_VARIABLE}) must be Label Studio's http(s) URL, got {url!r}")
    if not 0 <= args.port <= 65535 or args.train_every < 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--port must be in 0..65535, --train-every >= 0, the limits positive")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if not is_loopback(args.host) and not api_key and not args.insecure_no_auth:
        raise ValueError(f"listening on {args.host} lets other machines use the model: pass --api-key KEY (or set "
                         f"{KEY_VARIABLE}), or --insecure-no-auth to serve without a key")
    return url, token, api_key


def run(args: argparse.Namespace) -> int:
    missing = missing_extra()
    if missing:
        print(f"unetkit label-studio: {missing} is not installed; install the serve extra: pip install 'unetkit[serve]'",
              file=sys.stderr)  # fmt: skip
        return 1
    url, token, api_key = _settings(args)
    from unetkit.config import parse_duration
    from unetkit.serve import Limits
    from unetkit.serve.label_studio.app import create_app
    from unetkit.serve.label_studio.backend import BackendOptions, LabelStudioBackend
    from unetkit.serve.label_studio.images import LabelStudio
    from unetkit.serve.server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    limits = Limits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
    options = BackendOptions(tta=args.tta, train_every=args.train_every, budget_s=parse_duration(args.time_budget),
                             steps=args.steps, device=args.device, limits=limits)  # fmt: skip
    backend = LabelStudioBackend(args.run, studio=LabelStudio(url=url.rstrip("/"), token=token), options=options)
    server = Server(create_app(backend, api_key=api_key), args.host, args.port)
    print(f"Label Studio ML backend for {args.run} on {server.url} (model_version {backend.model_version}; "
          f"Label Studio at {url}; Ctrl-C stops)", flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print("stopped", file=sys.stderr)
    return 0
