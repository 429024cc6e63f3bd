"""tools/data.py: check, stats, browse, anchors and convert as a user runs them."""
import json
import os

import cv2
import pytest

from detkit.data import shapes
from tests.tools.test_tools import run_tool, tool


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("data_tool"), num_train=8, num_val=2, image_size=96, seed=4)


def test_check_passes_a_clean_set_and_fails_a_broken_one(small_set, tmp_path, capsys):
    data = tool("data")
    assert data.main(["check", small_set.coco_train, "--images", small_set.image_root]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("0 errors, 0 warnings (no defects)")
    broken = json.loads(open(small_set.coco_train).read())
    broken["annotations"][0]["bbox"][2] = 0
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    assert data.main(["check", str(path), "--images", small_set.image_root]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"error: annotation {broken['annotations'][0]['id']} of image ") and "[box_empty]" in first


def test_stats_prints_and_writes(small_set, tmp_path, capsys):
    out = tmp_path / "stats"
    assert tool("data").main(["stats", small_set.coco_train, "--images", small_set.image_root, "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images"] == 8 and [c["name"] for c in stats["classes"]] == list(small_set.classes)
    assert f"{stats['images']} images, {stats['annotations']} objects" in capsys.readouterr().out
    assert cv2.imread(str(out / "stats.png")) is not None


def test_browse_draws_grids(small_set, tmp_path):
    data = tool("data")
    assert data.main(["browse", small_set.coco_train, "--images", small_set.image_root, "--out", str(tmp_path),
                      "--per-grid", "4"]) == 0
    grids = sorted(os.listdir(tmp_path))
    assert grids == ["grid_000.jpg", "grid_001.jpg"]  # 8 images, 4 a grid
    image = cv2.imread(str(tmp_path / grids[0]))
    assert image.shape == (2 * 320, 2 * 320, 3)


def test_anchors_prints_the_overrides(small_set, capsys):
    assert tool("data").main(["anchors", small_set.coco_train, "--images", small_set.image_root,
                              "--model", "ssd300_resnet18", "--set", "width=0.25", "size=96"]) == 0
    out = capsys.readouterr().out
    assert "best possible recall at IoU 0.5" in out
    assert out.strip().splitlines()[-1].startswith("train with: --set model.options.scales=[")


def test_bad_arguments_are_one_line(small_set, tmp_path):
    result = run_tool("data.py", "stats", str(tmp_path / "nope.json"))
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "nope.json" in result.stderr


def test_convert_writes_another_format_that_reads_back(small_set, tmp_path, capsys):
    from detkit.data import load_records

    out = tmp_path / "yolo"
    assert tool("data").main(["convert", small_set.coco_train, str(out), "--images", small_set.image_root,
                              "--to", "yolo"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (yolo): train/images 8, train/annotations ")
    back = load_records(str(out / "data.yaml"), split="train")
    assert back.classes == list(small_set.classes) and len(back.coco["images"]) == 8
