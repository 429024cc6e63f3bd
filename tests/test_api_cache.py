"""detect()'s one-model cache (detkit/api.py)."""
import os

import pytest
import torch
from torch import nn

from detkit import api


class _Counter(nn.Module):
    """Stands in for a loaded detector: one detection per image, its score the load number."""

    def __init__(self, number: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.number, self.classes = number, ["thing"]

    def forward(self, images):
        return [{"boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]), "scores": torch.tensor([self.number / 10]),
                 "labels": torch.tensor([1])} for _ in images]


@pytest.fixture
def loads(monkeypatch, tmp_path):
    calls = []

    def fake_load_model(path, device=None):
        calls.append(path)
        return _Counter(len(calls))

    monkeypatch.setattr(api, "load_model", fake_load_model)
    api.clear_model_cache()
    yield calls
    api.clear_model_cache()


def test_detect_loads_a_checkpoint_once_until_it_changes_or_is_cleared(loads, tmp_path):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"weights")
    image = torch.rand(3, 8, 8)
    score = lambda: float(api.detect(image, checkpoint, score_threshold=0.0)[0]["scores"][0])  # noqa: E731
    assert score() == pytest.approx(0.1) and score() == pytest.approx(0.1)
    assert len(loads) == 1
    stat = os.stat(checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was rewritten
    assert score() == pytest.approx(0.2) and len(loads) == 2
    api.clear_model_cache()
    assert score() == pytest.approx(0.3) and len(loads) == 3
    other = tmp_path / "other.pth"
    other.write_bytes(b"weights")
    api.detect(image, other)
    assert len(api._MODEL_CACHE) == 1  # one model kept, the last one
