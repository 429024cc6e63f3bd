"""Run a checkpoint on images, folders of images or videos.

    python tools/infer.py work_dirs/ssd_shapes/best.pth photo.jpg more_photos/ clip.mp4 --out out/
    python tools/infer.py best.pth photos/ --out out/ --runtime fused --batch-size 8 --workers 2

Writes each input with its boxes, labels, scores (and masks) drawn into --out
(images as .jpg, videos as .mp4) and all detections into --out/detections.json.
Images are read by --workers background threads and run --batch-size at a
time (default: 8 for models that resize to one fixed size, SSD and TinySSD;
1 otherwise, where larger batches take consecutive images of one size); the
detections are those of one image at a time, up to float rounding.
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
    parser.add_argument("--runtime", default="eager",
                        help="inference runtime, a name in detkit.runtimes.RUNTIMES: eager (default; the model as "
                             "trained), fused (BatchNorms folded into the convolutions), bf16 (backbone and heads in "
                             "bfloat16, on CPUs with AMX or AVX512-BF16), onnxruntime, int8 (needs --calibration)")
    parser.add_argument("--calibration", metavar="PATH_OR_FOLDER",
                        help="calibration images for runtimes that calibrate (int8): a folder, a glob pattern "
                             "(quoted) or one image")
    parser.add_argument("--batch-size", type=int,
                        help="images per model call (default: 8 for fixed-size models such as SSD, else 1)")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads that read and decode images ahead of the model and draw the results "
                             "(default 2; 0 reads in the main thread)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.api import load_model
    from detkit.inference import run_inference

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    model = load_model(args.checkpoint, args.device, runtime=args.runtime, calibration=args.calibration)
    summary = run_inference(model, args.inputs, args.out, args.score_threshold, batch_size=args.batch_size,
                            workers=args.workers, progress=not args.no_progress)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
