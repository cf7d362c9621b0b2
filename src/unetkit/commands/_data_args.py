"""Dataset options shared by ``check``, ``plan``, ``train`` and ``evaluate``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unetkit.data.options import DataConfig


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("dataset options")
    g.add_argument("--image-dir", default="", help="images sub-folder (default: auto-detect images/, imagesTr/ ...)")
    g.add_argument("--mask-dir", default="", help="masks sub-folder (default: auto-detect masks/, labelsTr/ ...)")
    g.add_argument("--roi-dir", default="", help="region-of-interest masks; pixels outside are ignored")
    g.add_argument("--mask-threshold", type=int, default=None, help="binarise grey masks: value >= N -> 1")
    g.add_argument("--value-map", default=None, help="raw mask value -> class, e.g. 0:1,255:0")
    g.add_argument("--colour-table", default=None, help="JSON file {class: [r,g,b]} or 'name=#rrggbb,...'")
    g.add_argument("--ignore-colour", action="append", default=[], help="#rrggbb mapped to the ignore index")
    g.add_argument("--ignore-index", type=int, default=255, help="mask value meaning 'not labelled'")
    g.add_argument("--classes", default=None, help="comma-separated class names (background first)")
    g.add_argument("--no-background", action="store_true", help="class 0 is a real class, not background")
    g.add_argument(
        "--task",
        choices=("binary", "multiclass", "multilabel"),
        default=None,
        help="default: binary when --mask-threshold or a 0/1 --value-map is given, else multiclass",
    )
    g.add_argument("--vector-labels", default="", metavar="FILE",
                   help="one vector file (GeoJSON, GeoPackage, Shapefile) labelling every GeoTIFF scene of DATA")
    g.add_argument("--class-field", default="", metavar="ATTR",
                   help="the vector attribute holding each feature's class (default: one foreground class)")
    g.add_argument("--group-by", default="none", help="none | folder | a regex whose first group is the key")


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """Build a :class:`DataConfig` from the parsed options (values validated, errors name the option)."""
    # Imported here: building the parser (``unetkit --help``) must not pay for numpy.
    from unetkit.data.annotations import with_source_classes
    from unetkit.data.masks import parse_colour, parse_colour_table
    from unetkit.data.options import DataConfig

    colour_table = parse_colour_table(args.colour_table) if args.colour_table else None
    task = args.task or ("binary" if (args.mask_threshold is not None or _binary_map(args.value_map)) else "multiclass")
    config = DataConfig(
        root=str(args.data),
        image_dir=args.image_dir,
        mask_dir=args.mask_dir,
        roi_dir=args.roi_dir,
        mask_threshold=args.mask_threshold,
        value_map=_value_map(args.value_map),
        colour_table=colour_table,
        ignore_colours=[parse_colour(c) for c in args.ignore_colour],
        ignore_index=args.ignore_index,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else [],
        task=task,
        background=not args.no_background and not (colour_table and not args.classes),
        group_by=args.group_by,
        vector_labels=getattr(args, "vector_labels", ""),
        class_field=getattr(args, "class_field", ""),
    )
    # An annotation export (COCO, CVAT, Label Studio, vectors) names its classes: they go into the plan.
    return with_source_classes(config)


def _binary_map(text: str | None) -> bool:
    from unetkit.data.masks import parse_value_map

    if not text:
        return False
    return set(parse_value_map(text).values()) <= {0, 1}


def _value_map(text: str | None) -> dict[int, int] | None:
    from unetkit.data.masks import parse_value_map

    return parse_value_map(text) if text else None
