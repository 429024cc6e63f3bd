"""Files in and out, beneath everything else: atomic writes and JSON with
errors that name the file (`jsonio`), COCO's run-length mask encoding
(`rle`), and drawn detections, plots and PNG/JPEG writing (`viz`). These
modules import nothing of detkit but each other, so every layer may use them.
"""
