import json

import numpy as np
import pytest
import torch

from detkit.evaluation import (COCOEvaluator, VOCEvaluator, ap_table, coco_pr_curves, plot_pr_curves,
                               save_metrics)
from detkit.data.synthetic import synthetic_coco


@pytest.fixture(scope="module")
def coco_metrics():
    gt, results = synthetic_coco(num_images=10, seed=3)
    evaluator = COCOEvaluator(gt)
    evaluator.update(results)
    return evaluator, evaluator.compute()


def test_ap_table_lists_every_class(coco_metrics):
    evaluator, metrics = coco_metrics
    table = ap_table(metrics.per_category)
    for name, value in metrics.per_category.items():
        assert name in table
        assert ("-" if value < 0 else f"{100 * value:.1f}") in table
    row = next(line for line in table.splitlines() if "class_7" in line)
    assert row.split("class_7")[1].split("|")[1].strip() == "-"  # the class with no GT


def test_save_metrics_writes_all_numbers(tmp_path, coco_metrics):
    _, metrics = coco_metrics
    save_metrics(tmp_path / "metrics.json", metrics)
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["stats"]["AP"] == pytest.approx(metrics.stats["AP"])
    assert np.array(payload["precision"]).shape == metrics.precision.shape


def test_plot_pr_curves_writes_a_png(tmp_path, coco_metrics):
    evaluator, metrics = coco_metrics
    curves = coco_pr_curves(metrics, evaluator.category_names)
    assert "class_7" not in curves and len(curves) == 7  # no GT, no curve
    out = tmp_path / "plots" / "pr.png"
    plot_pr_curves(curves, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    voc = VOCEvaluator(["a"])
    voc.update({0: {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "scores": torch.ones(1), "labels": torch.tensor([1])}},
               {0: {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([1])}})
    plot_pr_curves(voc.compute().curves, tmp_path / "voc.png")
    with pytest.raises(ValueError, match="no curves to plot"):
        plot_pr_curves({}, tmp_path / "none.png")
