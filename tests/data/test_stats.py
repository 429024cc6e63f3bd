"""detkit.data.stats against pycocotools' own counts and a plain restatement."""
import json

import numpy as np
from pycocotools.coco import COCO

from detkit.data import dataset_stats, load_records
from detkit.data.stats import plot_stats, stats_table


def test_counts_equal_pycocotools(hard_set):
    stats = dataset_stats(load_records(hard_set.coco_train, image_root=hard_set.image_root))
    coco = COCO(hard_set.coco_train)
    for row in stats["classes"]:
        assert row["instances"] == len(coco.getAnnIds(catIds=[row["id"]]))
        assert row["images"] == len(coco.getImgIds(catIds=[row["id"]]))
    areas = np.array([a["area"] for a in coco.dataset["annotations"]])
    assert stats["coco_size_split"] == {"small": int((areas < 32 ** 2).sum()),
                                        "medium": int(((areas >= 32 ** 2) & (areas < 96 ** 2)).sum()),
                                        "large": int((areas >= 96 ** 2).sum())}
    per_image = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
    assert stats["boxes_per_image"]["max"] == max(per_image)
    assert abs(stats["boxes_per_image"]["mean"] - np.mean(per_image)) < 1e-9
    assert sum(stats["box_size"]["counts"]) == len(areas)
    assert stats["image_sizes"] == {"160x160": 20}


def test_histograms_put_values_in_their_bins(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}]
    # sizes 4, 20, 20, 20, 32 (32^2: COCO's first medium area); ratios 1, 1/4, 4, 4, 1
    boxes = [[0, 0, 4, 4], [0, 0, 10, 40], [0, 0, 40, 10], [0, 0, 40, 10], [0, 0, 32, 32]]
    anns = [{"id": n + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for n, b in enumerate(boxes)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    stats = dataset_stats(load_records(str(path), image_root=str(tmp_path)))
    size = dict(zip(stats["box_size"]["bins"], stats["box_size"]["counts"]))
    assert size["0-8"] == 1 and size["16-32"] == 3 and size["32-64"] == 1 and sum(size.values()) == 5
    assert stats["coco_size_split"] == {"small": 4, "medium": 1, "large": 0}
    ratio = dict(zip(stats["aspect_ratio"]["bins"], stats["aspect_ratio"]["counts"]))
    assert ratio["1/4-1/2"] == 1 and ratio["4-8"] == 2 and ratio["1/1.5-1.5"] == 2 and sum(ratio.values()) == 5
    text = stats_table(stats)
    assert "x" in text and "5 objects" in text
    plot_stats(stats, tmp_path / "stats.png")
    assert (tmp_path / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
