"""Evaluate a checkpoint on its validation data (or another set).

    python tools/eval.py work_dirs/ssd_shapes/best.pth
    python tools/eval.py model.pth --data coco --images /data/coco/val2017 --ann /data/coco/annotations/x.json
    python tools/eval.py model.pth --data voc --voc-root /data/VOCdevkit --split test --out results/

    python tools/eval.py work_dirs/ssd_shapes/best.pth --analyze

Prints the headline metrics and the per-class AP table; writes metrics.json,
results.json (COCO records, for COCO metrics) and pr_curves.png to --out.
With --analyze (COCO ground truth only), also analysis.json and report.html:
error types, confusion matrix, per-class thresholds and the worst images
(detkit.evaluation.analyze), one self-contained page to open in a browser.
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
    parser.add_argument("--analyze", action="store_true",
                        help="also write analysis.json and report.html (error types, confusion matrix, "
                             "per-class thresholds, worst images); needs COCO ground truth")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.api import load_model
    from detkit.engine.report import evaluate_model

    model = load_model(args.checkpoint, args.device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   "eval_" + os.path.splitext(os.path.basename(args.checkpoint))[0])
    ground_truth = _coco_ground_truth(model, args) if args.analyze else None  # fails before predicting
    report = evaluate_model(model, out, data=args.data, images=args.images, ann=args.ann,
                            voc_root=args.voc_root, year=args.year, split=args.split,
                            iou_type=args.iou_type, num_images=args.num_images)
    print(report)
    if ground_truth is not None:
        print(_analyze(ground_truth, out, args.iou_type or model.config.eval.iou_type, args.num_images))
    print(f"written to {out}")
    return 0


def _coco_ground_truth(model, args: argparse.Namespace):
    """(COCO ground truth, its dataset) of what evaluate_model scores, for --analyze."""
    if args.data == "coco":
        from detkit.data import CocoDetection

        if not args.images or not args.ann:
            raise ValueError("--data coco needs --images (the image folder) and --ann (the annotation JSON)")
        return args.ann, CocoDetection(args.images, args.ann)
    if args.data == "config" and model.config.eval.metric == "coco":
        from detkit.engine.build import build_datasets

        splits = build_datasets(model.config, proposals=False)
        return splits.val_ann, splits.val
    raise ValueError("--analyze needs COCO ground truth: --data config with eval.metric='coco', or --data coco")


def _analyze(ground_truth, out: str, iou_type: str, num_images: int) -> str:
    """Analyses out/results.json on the images evaluate_model scored (the
    dataset's first num_images, or all); writes the report; returns a summary."""
    from detkit.evaluation import analyze, write_report

    gt, dataset = ground_truth
    count = min(num_images, len(dataset)) if num_images > 0 else len(dataset)
    analysis = analyze(gt, os.path.join(out, "results.json"), iou_type, image_ids=dataset.ids[:count],
                       images=dataset.image_root)
    path = write_report(analysis, out)
    biggest, at_fg = analysis.biggest_error(), analysis.biggest_error(analysis.fg_key)
    confused = analysis.confusion.most_confused(1)
    pair = f"{confused[0][0]} -> {confused[0][1]} ({confused[0][2]})" if confused else "none"
    return (f"biggest error type: {biggest} (dAP {100 * analysis.errors['AP'][biggest]:.2f} over IoU .50:.95), "
            f"{at_fg} at IoU {analysis.fg_iou:g} (dAP {100 * analysis.errors[analysis.fg_key][at_fg]:.2f}); "
            f"most confused: {pair}\nreport: {path}")


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
