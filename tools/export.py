"""Export a checkpoint to ONNX or TorchScript.

    python tools/export.py work_dirs/ssd_shapes/best.pth --format onnx
    python tools/export.py model.pth --format torchscript --size 480 640 --out model.pt
    python tools/export.py work_dirs/ssdlite_shapes/best.pth --format onnx --dynamic --input uint8

By default the exported model takes one float image [3, H, W] in [0, 1] of
exactly --size (default: the config's training size) and returns boxes,
scores, labels (and masks). With --dynamic (ONNX; SSD, Faster and Mask R-CNN)
it takes an image of any size, uint8 [H, W, 3] RGB (--input uint8, the
default) or float [3, H, W] in [0, 1] (--input float), normalises and resizes
it inside the graph and returns boxes in that image's pixels, scores and
labels after NMS, and masks [N, 1, H, W] at that size for Mask R-CNN.
The class names are written beside it as <out>.classes.json.
"""
from __future__ import annotations

import argparse
import os
import sys

from _common import fail_cleanly  # tools/ is on sys.path when run as a script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input image size")
    parser.add_argument("--out", help="output file (default: the checkpoint's name with .onnx / .pt)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--dynamic", action="store_true",
                        help="ONNX for images of any size, pre- and post-processing inside (SSD, Faster/Mask R-CNN)")
    parser.add_argument("--input", choices=["uint8", "float"],
                        help="--dynamic's input: uint8 [H, W, 3] RGB or float [3, H, W] in [0, 1] (default: uint8)")
    args = parser.parse_args(argv)
    if args.dynamic and (args.format != "onnx" or args.size):
        parser.error("--dynamic writes ONNX for any image size: it takes neither --format torchscript nor --size")
    if args.input and not args.dynamic:
        parser.error("--input is --dynamic's (the fixed-size graph takes float [3, H, W])")
    args.input = args.input or "uint8"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.api import load_model
    from detkit.runtimes.export import export_dynamic, export_model
    from detkit.io.jsonio import write_json_atomic

    model = load_model(args.checkpoint, "cpu")
    data = model.config.data
    square = data.augment in ("ssd", "light", "flips")  # SSD-style fixed square input
    size = args.size or ((data.size, data.size) if square else (data.min_size[0],) * 2)
    out = args.out or os.path.splitext(args.checkpoint)[0] + (".onnx" if args.format == "onnx" else ".pt")
    if args.dynamic:
        export_dynamic(model, out, args.input, args.opset)
        described = f"for {args.input} images of any size"
    else:
        export_model(model, out, size, args.format, args.opset)
        described = f"for {size[0]}x{size[1]} images"
    write_json_atomic(os.path.splitext(out)[0] + ".classes.json", list(model.classes))
    print(f"exported {model.config.model.name} {described} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
