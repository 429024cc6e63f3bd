"""Look at a dataset before training on it, and convert it between formats.

    python tools/data.py check data.yaml                 # defects, one line each; exit 1 on errors
    python tools/data.py stats annotations/instances_train.json --out stats/
    python tools/data.py browse my_labelme_folder/ --out browse/
    python tools/data.py convert data.yaml coco_out/ --to coco
    python tools/data.py anchors data.yaml --model fasterrcnn_resnet50_fpn

DATASET is anything detkit.data.load_records reads: a COCO .json file, a
VOCdevkit folder, a YOLO data.yaml (or its folder), a LabelMe folder, a CVAT
for images 1.1 .xml file; --format names it when the path does not tell.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys

from _common import fail_cleanly  # tools/ is on sys.path when run as a script

FORMATS = ("coco", "voc", "yolo", "labelme", "cvat")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("dataset", help="a COCO .json, VOCdevkit folder, YOLO data.yaml, LabelMe folder or CVAT .xml")
        sub.add_argument("--format", choices=FORMATS, help="the dataset's format (default: from the path)")
        sub.add_argument("--split", help="YOLO split or VOC image set (default: train; check: every YOLO split)")
        sub.add_argument("--images", help="the image folder of a COCO or CVAT file (default: beside it)")
        return sub

    command("check", "report what would silently ruin a training run; exit 1 when there are errors")
    stats = command("stats", "objects per class, boxes per image, box sizes and shapes, image sizes")
    stats.add_argument("--out", help="folder for stats.json and stats.png (default: print only)")
    browse = command("browse", "grids of images with their boxes, masks and class names drawn")
    browse.add_argument("--out", required=True, help="output folder")
    browse.add_argument("--max-images", type=int, default=64)
    browse.add_argument("--per-grid", type=int, default=16)
    convert = command("convert", "write the dataset (every split) in another format")
    convert.add_argument("output", help="the folder to write (must not exist, unless --overwrite)")
    convert.add_argument("--to", required=True, choices=FORMATS)
    convert.add_argument("--overwrite", action="store_true")
    anchors = command("anchors", "fit a model's anchor sizes and ratios (SSD: default-box scales) to the boxes")
    anchors.add_argument("--model", required=True, help="a zoo name, e.g. fasterrcnn_resnet50_fpn, ssd300_vgg16")
    anchors.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                         help="the model's options as training sets them (min_size=..., size=...)")
    return parser.parse_args(argv)


def _records(args):
    from detkit.data import load_records

    return load_records(args.dataset, args.format, split=args.split or "train", image_root=args.images)


def run_check(args) -> int:
    from detkit.data import check_dataset

    report = check_dataset(args.dataset, args.format, split=args.split, **_image_root(args))
    print(report.text())
    return 1 if report.errors else 0


def _image_root(args) -> dict:
    return {"image_root": args.images} if args.images else {}


def run_stats(args) -> int:
    from detkit.data.stats import dataset_stats, plot_stats, stats_table
    from detkit.io.jsonio import write_json_atomic

    stats = dataset_stats(_records(args))
    print(stats_table(stats))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json_atomic(os.path.join(args.out, "stats.json"), stats)
        plot_stats(stats, os.path.join(args.out, "stats.png"))
        print(f"wrote {os.path.join(args.out, 'stats.json')} and stats.png")
    return 0


def run_browse(args) -> int:
    from detkit.data.browse import browse

    paths = browse(_records(args), args.out, per_grid=args.per_grid, max_images=args.max_images)
    print(f"wrote {len(paths)} grid(s) to {args.out}")
    return 0


def run_convert(args) -> int:
    from detkit.data import convert

    written = convert(args.dataset, args.output, args.to, src_format=args.format, overwrite=args.overwrite,
                      **_image_root(args))
    print(f"wrote {args.output} ({args.to}): " + ", ".join(f"{key} {n}" for key, n in written.items()))
    return 0


def run_anchors(args) -> int:
    from detkit.models import fit_anchors

    options = dict(_key_value(item) for item in args.set)
    fit = fit_anchors(_records(args), args.model, **options)
    print(fit.text())
    return 0


def _key_value(item: str) -> tuple[str, object]:
    """'min_size=512' -> ('min_size', 512); words that are no Python literal stay text."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
    try:
        return key.strip(), ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return key.strip(), text.strip()


def main(argv=None) -> int:
    args = parse_args(argv)
    return {"check": run_check, "stats": run_stats, "browse": run_browse, "convert": run_convert,
            "anchors": run_anchors}[args.command](args)


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
