"""Run a checkpoint on images, folders of images or videos.

    python tools/infer.py work_dirs/ssd_shapes/best.pth photo.jpg more_photos/ clip.mp4 --out out/

Writes each input with its boxes, labels, scores (and masks) drawn into --out
(images as .jpg, videos as .mp4) and all detections into --out/detections.json.
"""
from __future__ import annotations

import argparse
import sys

from _common import fail_cleanly  # tools/ is on sys.path when run as a script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a detkit checkpoint, or a zoo name with pretrained weights "
                                           "(fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn, ssd300_vgg16)")
    parser.add_argument("inputs", nargs="+", help="image files, folders of images, video files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--device")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.api import load_model
    from detkit.inference import run_inference

    model = load_model(args.checkpoint, args.device)
    summary = run_inference(model, args.inputs, args.out, args.score_threshold)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
