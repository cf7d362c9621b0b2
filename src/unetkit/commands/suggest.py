"""``unetkit suggest RUN UNLABELLED... --n 20 --out DIR``: which images to label next.

Ranks unlabelled images by the run's uncertainty over test-time-augmentation views (foreground-aware
pooling) with diversity (uncertainty-weighted k-center on encoder features), skipping the run's own
training and validation images; writes ``DIR/suggestions.csv`` and ``DIR/contact_sheet.png``. The scoring
is documented in :mod:`unetkit.infer.suggest`.
"""

from __future__ import annotations

import argparse

from unetkit.choices import TTA_LEVELS
from unetkit.commands._argtypes import add_backend_argument, fraction, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None, help="run directory written by `unetkit train`")
    parser.add_argument("inputs", nargs="*", help="unlabelled image files, folders or globs")
    parser.add_argument("--cold-start", nargs="+", default=None, metavar="UNLABELLED",
                        help="no run yet: pick typical and diverse images of these files, folders or globs from the "
                             "pretrained encoder's features (k-means into --n clusters, the most typical image of "
                             "each; see unetkit.infer.coldstart)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --cold-start's k-means and of --strategy's draws")
    parser.add_argument("--strategy", default="suggest", choices=("suggest", "random", "foreground-random", "typical"),
                        help="suggest: uncertainty + diversity (the default); random; foreground-random: random, "
                             "one image per stratum of the run's predicted foreground fraction; typical: as "
                             "--cold-start (see unetkit.infer.strategies)")
    parser.add_argument("--regions", type=positive_int, default=None, metavar="SIZE",
                        help="suggest boxes of SIZE x SIZE pixels instead of whole images (2D; --strategy suggest): "
                             "writes DIR/regions.csv and the crops to label in DIR/regions/")
    parser.add_argument("--n", type=positive_int, default=20, help="how many images to suggest")
    parser.add_argument("--out", required=True, help="output folder (suggestions.csv, contact_sheet.png)")
    parser.add_argument("--tta", default="flips", choices=TTA_LEVELS[1:],
                        help="test-time augmentation whose views give the uncertainty")
    parser.add_argument("--fg-weight", type=fraction, default=0.5,
                        help="weight of the mean uncertainty over the predicted foreground and the most uncertain "
                             "pixels, against the image mean")
    parser.add_argument("--top-fraction", type=fraction, default=0.01,
                        help="most uncertain fraction of pixels counted with the foreground")
    parser.add_argument("--no-diversity", action="store_true",
                        help="rank by score alone (no k-center on encoder features; near-duplicates may both be picked)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which saved model to use")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")
    add_backend_argument(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.infer.suggest import SuggestOptions, suggest

    if args.cold_start:
        return _cold_start(args)
    if not args.run or not args.inputs:
        raise ValueError("suggest needs a run and unlabelled images (suggest RUN IMAGES... --n N --out DIR), or "
                         "--cold-start IMAGES... without a run")

    if args.strategy != "suggest":
        return _other_strategy(args)
    options = SuggestOptions(n=args.n, tta=args.tta, fg_weight=args.fg_weight, top_fraction=args.top_fraction,
                             diversity=not args.no_diversity, checkpoint=args.checkpoint, device=args.device,
                             backend=args.backend, regions=args.regions or 0)
    result = suggest(args.run, args.inputs, options, out=args.out)
    if result.note:
        print(f"note: {result.note}")
    print(f"scored {result.candidates} candidate image(s); skipped {len(result.skipped_train)} of the run's training "
          f"images and {len(result.skipped_val)} of its validation images")
    for pick in result.picks:
        print(f"{pick.rank:>4}  {pick.image.score:.4f}  {pick.image.path}")
    for rank, region in enumerate(result.regions, start=1):
        y0, x0, y1, x1 = region.box
        print(f"{rank:>4}  {region.score:.4f}  {region.path} [y {y0}:{y1}, x {x0}:{x1}]")
    print(f"wrote {', '.join(str(p) for p in result.written)}")
    return 0


def _cold_start(args: argparse.Namespace) -> int:
    from unetkit.infer.coldstart import cold_start
    from unetkit.precision import resolve_device

    if args.run or args.inputs:
        raise ValueError("--cold-start needs no run: give the images after --cold-start only")
    result = cold_start(args.cold_start, n=args.n, out=args.out, seed=args.seed, device=resolve_device(args.device))
    if result.note:
        print(f"note: {result.note}")
    print(f"cold start: {result.candidates} image(s), features of {result.encoder}; the most typical image of each "
          f"of {len(result.picks)} k-means clusters, largest cluster first")
    for pick in result.picks:
        print(f"{pick.rank:>4}  typicality {pick.image.score:.4f}  cluster of {int(pick.value)}  {pick.image.path}")
    print(f"wrote {', '.join(str(p) for p in result.written)}")
    return 0



def _other_strategy(args: argparse.Namespace) -> int:
    from unetkit.infer.files import expand_inputs
    from unetkit.infer.strategies import select, without_run_images, write_selection
    from unetkit.precision import resolve_device

    if args.regions:
        raise ValueError("--regions goes with --strategy suggest (boxes are scored by the run's uncertainty)")
    pool = without_run_images(args.run, expand_inputs(list(args.inputs)))
    selection = select(args.strategy, pool, n=args.n, seed=args.seed, run=args.run, device=resolve_device(args.device))
    if selection.note:
        print(f"note: {selection.note}")
    for rank, path in enumerate(selection.files, start=1):
        print(f"{rank:>4}  {path}")
    print(f"wrote {', '.join(str(p) for p in write_selection(selection, args.out))}")
    return 0
