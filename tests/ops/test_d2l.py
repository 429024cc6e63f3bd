"""detkit.ops.d2l against the book's printed examples (d2l.ai 14.4) and against
a plain-Python restatement of the book's definitions written here, apart
from the implementation: loops over pixels, anchors and boxes in float64."""
import math

import numpy as np

import pytest
import torch

from detkit import ops
from detkit.ops import d2l
from detkit.data.synthetic import random_boxes

# --- the book's definitions, restated as plain loops -----------------------------------------------


def book_pixel(y, x, height, width, sizes, ratios):
    """The n+m-1 anchors (x1, y1, x2, y2) of pixel (y, x): (s_i, r_1) for all i, then (s_1, r_j)."""
    shapes = [(s, ratios[0]) for s in sizes] + [(sizes[0], r) for r in ratios[1:]]
    cx, cy = (x + 0.5) / width, (y + 0.5) / height
    out = []
    for s, r in shapes:
        w, h = s * math.sqrt(r) * height / width, s / math.sqrt(r)
        out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return out


def book_prior(height, width, sizes, ratios):
    """All anchors, pixel by pixel in row-major order."""
    return [a for y in range(height) for x in range(width) for a in book_pixel(y, x, height, width, sizes, ratios)]


def iou(a, b, real=float):
    """IoU in the arithmetic of `real` (np.float32 rounds as the book's float32 tensors do:
    anchors on a grid tie in exact arithmetic and rounding decides which one wins)."""
    a, b = [real(v) for v in a], [real(v) for v in b]
    iw = max(real(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(real(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def book_greedy(matrix, threshold):
    """The book's assign_anchor_to_bbox on an IoU matrix (list of A rows of G values)."""
    num_anchors, num_gt = len(matrix), len(matrix[0])
    m = [list(row) for row in matrix]
    out = [-1] * num_anchors
    for a, row in enumerate(m):
        best = max(range(num_gt), key=lambda g: (row[g], -g))  # first maximum
        if row[best] >= threshold:
            out[a] = best
    for _ in range(num_gt):
        flat = [(m[a][g], -(a * num_gt + g)) for a in range(num_anchors) for g in range(num_gt)]
        _, neg = max(flat)  # first maximum in row-major order
        a, g = divmod(-neg, num_gt)
        out[a] = g
        for k in range(num_anchors):
            m[k][g] = -1.0
        for k in range(num_gt):
            m[a][k] = -1.0
    return out


def book_assign(gt, anchors, threshold=0.5, real=np.float32):
    if len(gt) == 0:
        return [-1] * len(anchors)
    return book_greedy([[iou(a, g, real) for g in gt] for a in anchors], float(real(threshold)))


def center(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]


def book_offset(anchor, box, eps=1e-6):
    ax, ay, aw, ah = center(anchor)
    bx, by, bw, bh = center(box)
    return [10 * (bx - ax) / aw, 10 * (by - ay) / ah, 5 * math.log(eps + bw / aw), 5 * math.log(eps + bh / ah)]


def book_target(anchors, labels):
    """labels: per image, a list of [class, x1, y1, x2, y2] rows; class -1 rows are padding."""
    offsets, masks, classes = [], [], []
    for rows in labels:
        real = [r for r in rows if r[0] >= 0]
        assignment = book_assign([r[1:] for r in real], anchors)
        off, mask, cls = [], [], []
        for anchor, j in zip(anchors, assignment):
            off += book_offset(anchor, real[j][1:]) if j >= 0 else [0.0] * 4
            mask += [1.0 if j >= 0 else 0.0] * 4
            cls.append(int(real[j][0]) + 1 if j >= 0 else 0)
        offsets.append(off)
        masks.append(mask)
        classes.append(cls)
    return offsets, masks, classes


def book_inverse(anchor, offset):
    ax, ay, aw, ah = center(anchor)
    cx, cy = offset[0] * aw / 10 + ax, offset[1] * ah / 10 + ay
    w, h = math.exp(offset[2] / 5) * aw, math.exp(offset[3] / 5) * ah
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def book_nms(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= threshold for k in keep):
            keep.append(i)
    return keep


def book_detection(cls_probs, offsets, anchors, nms_threshold=0.5, pos_threshold=0.009999999):
    """One image: cls_probs [C+1][A], offsets [4A] -> rows (class, score, x1, y1, x2, y2)."""
    num_anchors = len(anchors)
    conf, cls = [], []
    for a in range(num_anchors):
        column = [cls_probs[c][a] for c in range(1, len(cls_probs))]
        best = max(range(len(column)), key=lambda c: (column[c], -c))
        conf.append(column[best])
        cls.append(best)
    boxes = [book_inverse(anchors[a], offsets[4 * a: 4 * a + 4]) for a in range(num_anchors)]
    keep = book_nms(boxes, conf, nms_threshold)
    order = keep + [a for a in range(num_anchors) if a not in keep]
    rows = []
    for a in order:
        label, score = (cls[a] if a in keep else -1), conf[a]
        if score < pos_threshold:
            label, score = -1, 1 - score
        rows.append([label, score] + boxes[a])
    return rows


def as_lists(t):
    return t.double().tolist()


# --- the book's printed examples (d2l.ai 14.4) -----------------------------------------------------

BOOK_GT = torch.tensor([[0, 0.1, 0.08, 0.52, 0.92], [1, 0.55, 0.2, 0.9, 0.88]])
BOOK_ANCHORS = torch.tensor([[0, 0.1, 0.2, 0.3], [0.15, 0.2, 0.4, 0.4], [0.63, 0.05, 0.88, 0.98],
                             [0.66, 0.45, 0.8, 0.8], [0.57, 0.3, 0.92, 0.9]])


def test_book_anchor_example():
    h, w = 561, 728
    anchors = d2l.multibox_prior(torch.rand(1, 3, h, w), sizes=[0.75, 0.5, 0.25], ratios=[1, 2, 0.5])
    assert anchors.shape == (1, 2042040, 4) and anchors.dtype == torch.float32
    boxes = anchors.reshape(h, w, 5, 4)
    # The book prints tensor([0.06, 0.07, 0.63, 0.82]) for boxes[250, 250, 0, :].
    torch.testing.assert_close(boxes[250, 250, 0], torch.tensor([0.06, 0.07, 0.63, 0.82]), rtol=0, atol=0.006)
    for y, x in [(0, 0), (250, 250), (560, 727), (17, 401)]:  # 2M rows: spot-check some pixels
        expected = torch.tensor(book_pixel(y, x, h, w, [0.75, 0.5, 0.25], [1, 2, 0.5]), dtype=torch.float64)
        torch.testing.assert_close(boxes[y, x].double(), expected, rtol=0, atol=1e-6)


def test_book_labelling_example():
    offsets, mask, classes = d2l.multibox_target(BOOK_ANCHORS[None], BOOK_GT[None])
    assert classes.tolist() == [[0, 1, 2, 0, 2]]
    assert mask.tolist() == [[0.0] * 4 + [1.0] * 8 + [0.0] * 4 + [1.0] * 4]
    # As the book prints them (3 significant digits).
    printed = [0, 0, 0, 0, 1.40, 10.0, 2.59, 7.18, -1.20, 0.269, 1.68, -1.57, 0, 0, 0, 0, -0.571, -1.00, 4.17e-06,
               0.626]
    torch.testing.assert_close(offsets[0], torch.tensor(printed), rtol=5e-3, atol=1e-8)


def test_book_detection_example():
    anchors = torch.tensor([[0.1, 0.08, 0.52, 0.92], [0.08, 0.2, 0.56, 0.95], [0.15, 0.3, 0.62, 0.91],
                            [0.55, 0.2, 0.9, 0.88]])
    cls_probs = torch.tensor([[0.0] * 4, [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.9]])
    out = d2l.multibox_detection(cls_probs[None], torch.zeros(1, 16), anchors[None], nms_threshold=0.5)
    expected = torch.tensor([[0, 0.9, 0.1, 0.08, 0.52, 0.92], [1, 0.9, 0.55, 0.2, 0.9, 0.88],
                             [-1, 0.8, 0.08, 0.2, 0.56, 0.95], [-1, 0.7, 0.15, 0.3, 0.62, 0.91]])
    assert out.shape == (1, 4, 6)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)


# --- multibox_prior -------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (7, 2), (4, 4)])
@pytest.mark.parametrize("sizes, ratios", [([0.75, 0.5, 0.25], [1, 2, 0.5]), ([0.2, 0.272], [1, 2, 0.5]),
                                           ([0.3], [1]), ([1.0], [0.25, 4, 3])])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prior_matches_the_definition(hw, sizes, ratios, dtype):
    h, w = hw
    anchors = d2l.multibox_prior(torch.zeros(2, 8, h, w, dtype=dtype), sizes, ratios)
    assert anchors.shape == (1, h * w * (len(sizes) + len(ratios) - 1), 4) and anchors.dtype == dtype
    expected = torch.tensor(book_prior(h, w, sizes, ratios), dtype=torch.float64)
    torch.testing.assert_close(anchors[0].double(), expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_prior_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sizes"):
        d2l.multibox_prior(torch.zeros(1, 1, 2, 2), [], [1])
    with pytest.raises(ValueError, match="ratios"):
        d2l.multibox_prior(torch.zeros(1, 1, 2, 2), [0.5], [0, 1])
    with pytest.raises(ValueError, match="data"):
        d2l.multibox_prior(torch.zeros(3), [0.5], [1])


# --- offsets ---------------------------------------------------------------------------------------


def test_offsets_match_the_definition_and_invert():
    anchors = random_boxes(50, size=1.0, max_side=0.5, seed=1, dtype=torch.float64) + torch.tensor([0, 0, 0.01, 0.01],
                                                                                                  dtype=torch.float64)
    boxes = random_boxes(50, size=1.0, max_side=0.5, seed=2, dtype=torch.float64) + torch.tensor([0, 0, 0.01, 0.01],
                                                                                                dtype=torch.float64)
    offsets = d2l.offset_boxes(anchors, boxes)
    expected = [book_offset(a, b) for a, b in zip(as_lists(anchors), as_lists(boxes))]
    torch.testing.assert_close(offsets, torch.tensor(expected, dtype=torch.float64))
    # exact inverse but for eps inside the log
    torch.testing.assert_close(d2l.offset_inverse(anchors, d2l.offset_boxes(anchors, boxes, eps=0.0)), boxes)
    torch.testing.assert_close(d2l.offset_inverse(anchors, offsets),
                               torch.tensor([book_inverse(a, o) for a, o in zip(as_lists(anchors), expected)],
                                            dtype=torch.float64))


# --- assign_anchor_to_bbox -------------------------------------------------------------------------


def normalised_boxes(n, seed, max_side=0.5):
    boxes = random_boxes(n, size=0.8, max_side=max_side, seed=seed)
    return boxes + torch.tensor([0, 0, 1e-3, 1e-3])  # no zero-area boxes


@pytest.mark.parametrize("num_gt", [1, 2, 5, 20])
@pytest.mark.parametrize("num_anchors", [1, 3, 40, 300])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 1.0])
def test_assign_matches_the_definition(num_gt, num_anchors, threshold):
    gt, anchors = normalised_boxes(num_gt, seed=num_gt), normalised_boxes(num_anchors, seed=100 + num_anchors)
    out = d2l.assign_anchor_to_bbox(gt, anchors, threshold)
    assert out.dtype == torch.int64 and out.shape == (num_anchors,)
    assert out.tolist() == book_assign(as_lists(gt), as_lists(anchors), threshold)


def test_assign_each_ground_truth_gets_an_anchor_and_the_greedy_step_wins():
    # Anchor 0 overlaps gt 0 best (IoU 0.81 >= 0.5), but gt 1's only anchor is 0 as well;
    # the greedy step takes (0, 0) first, then gives gt 1 the largest entry left: anchor 1 (IoU 0).
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.05, 0.05, 0.5, 0.5]])
    anchors = torch.tensor([[0.0, 0.0, 0.45, 0.45], [0.8, 0.8, 0.9, 0.9]])
    out = d2l.assign_anchor_to_bbox(gt, anchors)
    assert out.tolist() == book_assign(as_lists(gt), as_lists(anchors)) == [0, 1]


@pytest.mark.parametrize("case", ["identical_gt", "identical_anchors", "all_identical", "disjoint"])
def test_assign_ties_resolve_as_the_book(case):
    box = [0.1, 0.1, 0.4, 0.4]
    gt = {"identical_gt": [box] * 3, "identical_anchors": [box, [0.2, 0.2, 0.6, 0.5]],
          "all_identical": [box] * 3, "disjoint": [[0.7, 0.7, 0.8, 0.8]] * 2}[case]
    anchors = {"identical_gt": [[0.1, 0.1, 0.45, 0.4], [0.0, 0.0, 0.4, 0.4], box, box],
               "identical_anchors": [box] * 4, "all_identical": [box] * 5, "disjoint": [box] * 3}[case]
    out = d2l.assign_anchor_to_bbox(torch.tensor(gt), torch.tensor(anchors))
    assert out.tolist() == book_assign(gt, anchors)


def test_assign_more_ground_truth_than_anchors_keeps_the_book_quirk():
    # After both anchors are taken the book's argmax over an all -1 matrix is entry (0, 0).
    gt = torch.tensor([[0.0, 0.0, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.2, 0.2]])
    anchors = torch.tensor([[0.5, 0.5, 0.85, 0.9], [0.0, 0.0, 0.3, 0.25]])
    out = d2l.assign_anchor_to_bbox(gt, anchors)
    assert out.tolist() == book_assign(as_lists(gt), as_lists(anchors)) == [0, 0]


def test_assign_edge_cases():
    anchors = normalised_boxes(6, seed=3)
    assert d2l.assign_anchor_to_bbox(torch.zeros(0, 4), anchors).tolist() == [-1] * 6
    assert d2l.assign_anchor_to_bbox(normalised_boxes(2, seed=4), torch.zeros(0, 4)).shape == (0,)
    zero_area = torch.tensor([[0.3, 0.3, 0.3, 0.3]])  # IoU 0 with everything, itself included
    out = d2l.assign_anchor_to_bbox(zero_area, torch.cat([zero_area, anchors]))
    assert out.tolist() == book_assign(as_lists(zero_area), as_lists(torch.cat([zero_area, anchors]))) == \
        [0] + [-1] * 6
    with pytest.raises(ValueError, match="ground_truth"):
        d2l.assign_anchor_to_bbox(torch.tensor([[0.5, 0.5, 0.1, 0.9]]), anchors)
    with pytest.raises(ValueError, match="anchors"):
        d2l.assign_anchor_to_bbox(anchors[:1], torch.tensor([[0.0, float("nan"), 1, 1]]))
    with pytest.raises(ValueError, match="iou_threshold"):
        d2l.assign_anchor_to_bbox(anchors[:1], anchors, 1.5)


def quantised(a, g, seed, levels):
    q = torch.rand(a, g, generator=torch.Generator().manual_seed(seed))
    return (q * levels).floor() / levels if levels else q


@pytest.mark.skipif(d2l._kernels is None, reason="numba kernel not available")
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 7), (50, 3), (200, 12), (5444, 6)])
@pytest.mark.parametrize("levels", [0, 2, 8])  # 0: no ties
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_assign_kernel_equals_reference_and_definition(shape, levels, dtype):
    matrix = quantised(*shape, seed=shape[0] * 31 + shape[1], levels=levels).to(dtype)
    for threshold in (0.0, 0.5, 0.7, 1.0):
        compiled = torch.from_numpy(d2l._kernels.greedy_assign(matrix.numpy(), matrix.numpy().dtype.type(threshold)))
        reference = d2l._assign_reference(matrix, threshold)
        assert torch.equal(compiled, reference)
        if shape[0] * shape[1] <= 2400:  # the Python restatement is quadratic
            assert compiled.tolist() == book_greedy(matrix.tolist(), float(matrix.new_tensor(threshold)))


@pytest.mark.skipif(d2l._kernels is None, reason="numba kernel not available")
def test_assign_kernel_compares_the_threshold_in_the_matrix_dtype():
    # float32(0.7) < 0.7, but torch compares a float32 tensor with float32(0.7): anchor 2, which only
    # the threshold step assigns, counts as >= 0.7.
    matrix = torch.tensor([[0.9, 0.1], [0.2, 0.95], [0.7, 0.1]], dtype=torch.float32)
    assert d2l._assign_reference(matrix, 0.7).tolist() == [0, 1, 0]
    assert d2l._assign(matrix, 0.7).tolist() == [0, 1, 0]
    assert d2l._assign_reference(matrix.double(), 0.7).tolist() == d2l._assign(matrix.double(), 0.7).tolist() == \
        [0, 1, -1]


# --- multibox_target -------------------------------------------------------------------------------


def random_labels(batch, num_gt, seed, pad=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(batch):
        boxes = normalised_boxes(num_gt, seed=seed * 10 + i, max_side=0.6)
        cls = torch.randint(0, classes, (num_gt, 1), generator=g).float()
        padding = torch.full((pad, 5), -1.0)
        rows.append(torch.cat([torch.cat([cls, boxes], 1), padding])[torch.randperm(num_gt + pad, generator=g)])
    return torch.stack(rows)


def check_target(anchors, labels):
    offsets, mask, classes = d2l.multibox_target(anchors, labels)
    num_anchors = anchors.shape[-2]
    assert offsets.shape == mask.shape == (labels.shape[0], 4 * num_anchors)
    assert classes.shape == (labels.shape[0], num_anchors) and classes.dtype == torch.int64
    rows = [[r for r in image if r[0] >= 0] for image in as_lists(labels)]
    exp_offsets, exp_mask, exp_classes = book_target(as_lists(anchors.reshape(-1, 4)), rows)
    assert classes.tolist() == exp_classes
    assert mask.tolist() == exp_mask
    torch.testing.assert_close(offsets.double(), torch.tensor(exp_offsets, dtype=torch.float64).reshape(offsets.shape),
                               rtol=1e-4, atol=1e-4)
    return offsets, mask, classes


@pytest.mark.parametrize("batch, num_gt, pad", [(1, 1, 0), (2, 3, 0), (3, 4, 2), (2, 10, 5)])
def test_target_matches_the_definition_on_prior_anchors(batch, num_gt, pad):
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 6, 5), [0.2, 0.4], [1, 2, 0.5])
    check_target(anchors, random_labels(batch, num_gt, seed=batch + num_gt + pad, pad=pad))


def test_target_padding_rows_take_no_part():
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 4, 4), [0.3, 0.5], [1, 2])
    labels = random_labels(2, 3, seed=5)
    padded = torch.cat([labels[:, :1], torch.full((2, 4, 5), -1.0), labels[:, 1:]], dim=1)  # padding in the middle
    padded[1, 1] = torch.tensor([-1.0, 0.2, 0.2, 0.6, 0.6])  # a padding row that looks like a box
    for a, b in zip(d2l.multibox_target(anchors, labels), check_target(anchors, padded)):
        assert torch.equal(a, b)


def test_target_edge_cases():
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 3, 3), [0.3], [1, 2])
    for labels in (torch.zeros(2, 0, 5), torch.full((2, 3, 5), -1.0)):  # no ground truth at all, all padding
        offsets, mask, classes = d2l.multibox_target(anchors, labels)
        assert not offsets.any() and not mask.any() and not classes.any() and classes.shape == (2, 18)
    assert d2l.multibox_target(anchors, torch.zeros(0, 3, 5))[2].shape == (0, 18)
    one = torch.tensor([[[2.0, 0.0, 0.0, 0.1, 0.1]]])  # one small box: the greedy step gives it one anchor
    offsets, mask, classes = check_target(anchors, one)
    assert classes.tolist() == [[3] + [0] * 17] and mask.sum() == 4
    same = torch.tensor([[[0.0, 0.2, 0.2, 0.7, 0.7], [1.0, 0.2, 0.2, 0.7, 0.7]]])  # identical boxes, two classes
    check_target(anchors, same)
    check_target(anchors[:, :3], random_labels(1, 6, seed=9))  # more objects than anchors


def test_target_rejects_bad_input():
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 2, 2), [0.3], [1])
    with pytest.raises(ValueError, match="labels"):
        d2l.multibox_target(anchors, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="whole class"):
        d2l.multibox_target(anchors, torch.tensor([[[0.5, 0.1, 0.1, 0.2, 0.2]]]))
    with pytest.raises(ValueError, match="non-padding"):
        d2l.multibox_target(anchors, torch.tensor([[[1.0, 0.3, 0.1, 0.2, 0.2]]]))
    with pytest.raises(ValueError, match="zero width or height"):
        d2l.multibox_target(torch.tensor([[[0.1, 0.1, 0.1, 0.3]]]), torch.tensor([[[1.0, 0.1, 0.1, 0.2, 0.2]]]))


# --- multibox_detection ----------------------------------------------------------------------------


def random_predictions(batch, classes, num_anchors, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(batch, classes + 1, num_anchors, generator=g) * 3, dim=1)
    offsets = torch.randn(batch, 4 * num_anchors, generator=g) * scale
    return probs, offsets


@pytest.mark.parametrize("classes, size", [(1, 2), (3, 3), (5, 4)])
@pytest.mark.parametrize("nms_threshold", [0.0, 0.3, 0.5, 1.0])
def test_detection_matches_the_definition(classes, size, nms_threshold):
    anchors = d2l.multibox_prior(torch.zeros(1, 1, size, size), [0.3, 0.5], [1, 2, 0.5])
    probs, offsets = random_predictions(2, classes, anchors.shape[1], seed=classes * 7 + size)
    out = d2l.multibox_detection(probs, offsets, anchors, nms_threshold, pos_threshold=0.05)
    assert out.shape == (2, anchors.shape[1], 6) and out.dtype == torch.float32
    for rows, p, o in zip(out, probs, offsets):
        expected = book_detection(as_lists(p), as_lists(o), as_lists(anchors[0]), nms_threshold, 0.05)
        assert rows[:, 0].tolist() == [r[0] for r in expected]
        torch.testing.assert_close(rows.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_detection_rows_and_thresholds():
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 4, 4), [0.3, 0.5], [1, 2])
    probs, offsets = random_predictions(1, 4, anchors.shape[1], seed=3)
    out = d2l.multibox_detection(probs, offsets, anchors, nms_threshold=1.0, pos_threshold=0.0)[0]
    assert (out[:, 0] >= 0).all()  # nothing suppressed, nothing below the threshold
    assert torch.equal(out[:, 1], out[:, 1].sort(descending=True).values)
    out = d2l.multibox_detection(probs, offsets, anchors, nms_threshold=1.0, pos_threshold=1.0)[0]
    conf = probs[0, 1:].max(0).values
    assert (out[:, 0] == -1).all() and torch.allclose(out[:, 1], 1 - conf.sort(descending=True).values)


def test_detection_ties_keep_the_lower_anchor_first_and_lowest_class():
    anchors = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.1, 0.6, 0.3, 0.9]])
    probs = torch.tensor([[[0.2, 0.2, 0.2], [0.4, 0.4, 0.4], [0.4, 0.4, 0.4]]])
    out = d2l.multibox_detection(probs, torch.zeros(1, 12), anchors)[0]
    assert out[:, 0].tolist() == [0, 0, 0]
    torch.testing.assert_close(out[:, 2:], anchors)


def test_detection_edge_cases_and_errors():
    anchors = torch.zeros(1, 0, 4)
    assert d2l.multibox_detection(torch.zeros(2, 3, 0), torch.zeros(2, 0), anchors).shape == (2, 0, 6)
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 2, 2), [0.3], [1])
    assert d2l.multibox_detection(torch.zeros(0, 3, 4), torch.zeros(0, 16), anchors).shape == (0, 4, 6)
    probs, offsets = random_predictions(1, 2, 4, seed=0)
    with pytest.raises(ValueError, match="offset_preds"):
        d2l.multibox_detection(probs, offsets[:, :8], anchors)
    with pytest.raises(ValueError, match="C >= 1"):
        d2l.multibox_detection(probs[:, :1], offsets, anchors)
    probs[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="cls_probs"):
        d2l.multibox_detection(probs, offsets, anchors)


def test_detection_agrees_with_target_round_trip():
    # Offsets that multibox_target makes, fed back with certain classes, decode to the ground truth.
    anchors = d2l.multibox_prior(torch.zeros(1, 1, 8, 8), [0.2, 0.35], [1, 2, 0.5])
    labels = torch.tensor([[[0.0, 0.1, 0.1, 0.4, 0.5], [1.0, 0.55, 0.3, 0.95, 0.9]]])
    offsets, mask, classes = d2l.multibox_target(anchors, labels)
    probs = torch.nn.functional.one_hot(classes, 3).permute(0, 2, 1).float()
    out = d2l.multibox_detection(probs, offsets.clone(), anchors, nms_threshold=0.5)[0]
    found = out[out[:, 0] >= 0]
    assert found[:, 0].tolist() == [0, 1]
    torch.testing.assert_close(found[:, 2:], labels[0, :, 1:], rtol=0, atol=1e-4)


def test_public_names():
    for name in ("multibox_prior", "assign_anchor_to_bbox", "multibox_target", "multibox_detection", "offset_boxes",
                 "offset_inverse"):
        assert getattr(ops, name) is getattr(d2l, name) and name in ops.__all__


# --- CUDA: the torch reference on the GPU agrees with the CPU kernels -----------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu_anchors = d2l.multibox_prior(torch.zeros(1, 1, 6, 7), [0.3, 0.5], [1, 2, 0.5])
    gpu_anchors = d2l.multibox_prior(torch.zeros(1, 1, 6, 7, device="cuda"), [0.3, 0.5], [1, 2, 0.5])
    assert gpu_anchors.is_cuda
    torch.testing.assert_close(gpu_anchors.cpu(), cpu_anchors, rtol=0, atol=1e-6)
    # Random anchors: grid anchors tie in exact arithmetic, and GPU rounding may break a tie otherwise.
    anchors, gt = normalised_boxes(500, seed=1), normalised_boxes(7, seed=2)
    assert torch.equal(d2l.assign_anchor_to_bbox(gt.cuda(), anchors.cuda()).cpu(), d2l.assign_anchor_to_bbox(gt, anchors))
    labels = random_labels(3, 5, seed=4, pad=2)
    for a, b in zip(d2l.multibox_target(anchors.cuda(), labels.cuda()), d2l.multibox_target(anchors, labels)):
        assert a.is_cuda
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)
    probs, offsets = random_predictions(2, 3, cpu_anchors.shape[1], seed=5)
    out = d2l.multibox_detection(probs.cuda(), offsets.cuda(), gpu_anchors)
    torch.testing.assert_close(out.cpu(), d2l.multibox_detection(probs, offsets, cpu_anchors), rtol=1e-5, atol=1e-5)
