"""Evaluate a checkpoint on its validation data (or another set).

    python tools/eval.py work_dirs/ssd_shapes/best.pth
    python tools/eval.py model.pth --data coco --images /data/coco/val2017 --ann /data/coco/annotations/x.json
    python tools/eval.py model.pth --data voc --voc-root /data/VOCdevkit --split test --out results/

Prints the headline metrics and the per-class AP table; writes metrics.json,
results.json (COCO records, for COCO metrics) and pr_curves.png to --out.
"""
from __future__ import annotations

import argparse
import os
import sys

from _common import fail_cleanly  # tools/ is on sys.path when run as a script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a detkit checkpoint, or a zoo name with pretrained weights "
                                           "(fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn, ssd300_vgg16)")
    parser.add_argument("--data", choices=["config", "coco", "voc"], default="config",
                        help="the checkpoint config's validation split (default), or a COCO / VOC set")
    parser.add_argument("--images", help="coco: the image folder")
    parser.add_argument("--ann", help="coco: the annotation JSON")
    parser.add_argument("--voc-root", help="voc: the VOCdevkit folder")
    parser.add_argument("--year", default="2007")
    parser.add_argument("--split", default="test", help="voc: the image set (default: %(default)s)")
    parser.add_argument("--iou-type", choices=["bbox", "segm"], help="default: the config's")
    parser.add_argument("--num-images", type=int, default=0, help="evaluate the first N images only")
    parser.add_argument("--out", help="output folder (default: next to the checkpoint, eval_<name>)")
    parser.add_argument("--device")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.api import load_model
    from detkit.engine.report import evaluate_model

    model = load_model(args.checkpoint, args.device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   "eval_" + os.path.splitext(os.path.basename(args.checkpoint))[0])
    report = evaluate_model(model, out, data=args.data, images=args.images, ann=args.ann,
                            voc_root=args.voc_root, year=args.year, split=args.split,
                            iou_type=args.iou_type, num_images=args.num_images)
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
