import pytest
import torch
from torchvision.models.detection import _utils as tv

from detkit import ops


def matched_idxs(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 4, (n,), generator=g)  # -2, -1 ignored; 0 negative; >= 1 positive


@pytest.mark.parametrize("batch,fraction", [(256, 0.5), (512, 0.25), (4, 1.0), (0, 0.5)])
def test_sampler_matches_torchvision_under_the_same_seed(batch, fraction):
    images = [matched_idxs(5000, 1), matched_idxs(300, 2), torch.zeros(10, dtype=torch.int64)]
    torch.manual_seed(123)
    pos, neg = ops.BalancedPositiveNegativeSampler(batch, fraction)(images)
    torch.manual_seed(123)
    tv_pos, tv_neg = tv.BalancedPositiveNegativeSampler(batch, fraction)(images)
    for ours, theirs in zip(pos + neg, tv_pos + tv_neg):
        assert ours.dtype == torch.uint8
        assert torch.equal(ours, theirs)


def test_sampler_respects_labels_and_budget():
    matched = matched_idxs(10000, 3)
    pos, neg = ops.BalancedPositiveNegativeSampler(256, 0.25)([matched])
    pos, neg = pos[0].bool(), neg[0].bool()
    assert pos.sum() == 64 and neg.sum() == 192
    assert (matched[pos] >= 1).all() and (matched[neg] == 0).all()
    few = torch.tensor([1, 0, 0, -1, -2, 2])
    pos, neg = ops.BalancedPositiveNegativeSampler(256, 0.5)([few])
    assert pos[0].tolist() == [1, 0, 0, 0, 0, 1] and neg[0].tolist() == [0, 1, 1, 0, 0, 0]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive_fraction must be in"):
        ops.BalancedPositiveNegativeSampler(256, 1.5)
    with pytest.raises(ValueError, match="batch_size_per_image must be a non-negative integer"):
        ops.BalancedPositiveNegativeSampler(-1, 0.5)
    with pytest.raises(TypeError, match=r"matched_idxs\[0\] must be a 1-D integer or float tensor"):
        ops.BalancedPositiveNegativeSampler(8, 0.5)([torch.zeros(4, dtype=torch.bool)])
    with pytest.raises(TypeError, match=r"matched_idxs\[0\] must be a 1-D integer or float tensor"):
        ops.BalancedPositiveNegativeSampler(8, 0.5)([torch.zeros(2, 2)])


def test_sampler_takes_the_rpn_float_labels_like_torchvision():
    labels = [torch.randint(-1, 2, (3000,), generator=torch.Generator().manual_seed(5)).float()]
    torch.manual_seed(9)
    ours = ops.BalancedPositiveNegativeSampler(256, 0.5)(labels)
    torch.manual_seed(9)
    theirs = tv.BalancedPositiveNegativeSampler(256, 0.5)(labels)
    assert all(torch.equal(a, b) for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]))
