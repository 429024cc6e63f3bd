"""detkit.ops.selective_search: every numba kernel against a plain-Python
reference (bit for bit where the kernel's arithmetic order allows it), the
whole pipeline's output contract, and its recall on generated Shapes."""
import importlib
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch

from detkit.data import shapes
from detkit.ops import box_iou

SS = importlib.import_module("detkit.ops.selective_search")
K = importlib.import_module("detkit.ops._ss_numba")
selective_search = SS.selective_search

USES = [SS.SIMILARITIES[name] for name in ("CTSF", "TSF", "F", "S")] + [(True, False, False, False)]


def blocky_image(seed, height, width, channels=3, blocks=4, noise=20.0):
    """Random rectangles of flat colour plus noise: images with real regions."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, channels))
    for _ in range(blocks):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = rng.integers(y0 + 1, height + 1), rng.integers(x0 + 1, width + 1)
        image[y0:y1, x0:x1] = rng.uniform(0, 255, channels)
    return np.clip(image + rng.normal(0, noise, image.shape), 0, 255).round()


# --- references ----------------------------------------------------------------------------------


def smooth_reference(image, mask):
    """FH's convolve_even twice, in plain Python floats."""
    h, w, c = image.shape

    def convolve(src, along_x):
        out = np.empty_like(src)
        for y in range(h):
            for x in range(w):
                for ch in range(c):
                    s = mask[0] * src[y, x, ch]
                    for i in range(1, len(mask)):
                        if along_x:
                            s += mask[i] * (src[y, max(x - i, 0), ch] + src[y, min(x + i, w - 1), ch])
                        else:
                            s += mask[i] * (src[max(y - i, 0), x, ch] + src[min(y + i, h - 1), x, ch])
                    out[y, x, ch] = s
        return out

    return convolve(convolve(image, True), False)


def felzenszwalb_reference(image, k, min_size, sigma=0.8):
    """Felzenszwalb-Huttenlocher as the paper describes it, with sets as
    dicts: edges of the 8-connected grid by non-decreasing float32 weight
    (ties in graph order), merged when w <= Int(C) + k / |C| on both sides,
    then small components joined along the sorted edges."""
    image = smooth_reference(image.astype(np.float64), SS.gaussian_mask(sigma))
    h, w, c = image.shape
    edges = []
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                if 0 <= y + dy < h and x + dx < w:
                    s = 0.0
                    for ch in range(c):
                        d = image[y, x, ch] - image[y + dy, x + dx, ch]
                        s += d * d
                    edges.append((float(np.float32(math.sqrt(s))), y * w + x, (y + dy) * w + x + dx))
    edges.sort(key=lambda e: e[0])  # stable
    component = list(range(h * w))
    members = {p: [p] for p in range(h * w)}
    internal = {p: 0.0 for p in range(h * w)}

    def unite(a, b, weight):
        for p in members[b]:
            component[p] = a
        members[a] += members.pop(b)
        internal[a] = weight

    for weight, p, q in edges:
        a, b = component[p], component[q]
        if a != b and weight <= internal[a] + k / len(members[a]) and weight <= internal[b] + k / len(members[b]):
            unite(a, b, weight)
    for _, p, q in edges:
        a, b = component[p], component[q]
        if a != b and (len(members[a]) < min_size or len(members[b]) < min_size):
            unite(a, b, 0.0)
    return canonical(np.array(component).reshape(h, w))


def canonical(labels):
    """Labels renumbered 0, 1, ... by first pixel in raster order."""
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse].reshape(labels.shape)


def intersection_reference(h1, h2):
    s = 0.0
    for a, b in zip(h1.tolist(), h2.tolist()):
        s += min(a, b)
    return s


def similarity_reference(a, b, sizes, boxes, colour, texture, use, image_size):
    s = 0.0
    if use[0]:
        s += intersection_reference(colour[a], colour[b])
    if use[1]:
        s += intersection_reference(texture[a], texture[b])
    if use[2]:
        s += 1.0 - (sizes[a] + sizes[b]) / image_size
    if use[3]:
        x1, y1 = min(boxes[a][0], boxes[b][0]), min(boxes[a][1], boxes[b][1])
        x2, y2 = max(boxes[a][2], boxes[b][2]), max(boxes[a][3], boxes[b][3])
        s += 1.0 - ((x2 - x1 + 1) * (y2 - y1 + 1) - sizes[a] - sizes[b]) / image_size
    return s


def grouping_reference(sizes, boxes, colour, texture, pairs, use, image_size):
    """Greedy merging with a dict of neighbouring pairs, recomputing the
    maximum every step: most similar first, then lower a, then lower b."""
    sizes, boxes = list(sizes.tolist()), [list(b) for b in boxes.tolist()]
    colour, texture = list(colour), list(texture)
    sim = {}
    for a, b in pairs.tolist():
        sim[(a, b)] = similarity_reference(a, b, sizes, boxes, colour, texture, use, image_size)
    merges = []
    while sim:
        a, b = max(sim, key=lambda p: (sim[p], -p[0], -p[1]))
        t = len(sizes)
        sa, sb = sizes[a], sizes[b]
        sizes.append(sa + sb)
        boxes.append([min(boxes[a][0], boxes[b][0]), min(boxes[a][1], boxes[b][1]),
                      max(boxes[a][2], boxes[b][2]), max(boxes[a][3], boxes[b][3])])
        colour.append((sa * colour[a] + sb * colour[b]) / sizes[t])
        texture.append((sa * texture[a] + sb * texture[b]) / sizes[t])
        neighbours = {u for pair in sim if a in pair or b in pair for u in pair} - {a, b}
        sim = {p: s for p, s in sim.items() if a not in p and b not in p}
        for u in neighbours:
            sim[(u, t)] = similarity_reference(u, t, sizes, boxes, colour, texture, use, image_size)
        merges.append((a, b))
    return np.array(merges, dtype=np.int64).reshape(-1, 2), np.array(boxes, dtype=np.int64)


def small_regions(seed, height=20, width=24, k=30.0, space="hsv"):
    """A real segmentation of a blocky image, its pixel bins and region features."""
    image = blocky_image(seed, height, width, blocks=6, noise=25).astype(np.uint8)
    colour = SS.colour_space(image, space)
    bins = SS.pixel_bins(colour)
    labels, n = K.segment(K.smooth(colour.astype(np.float64) * 255, SS.gaussian_mask(0.8)), k, 5)
    return labels, n, bins


# --- segmentation --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(12, 15, 3), (9, 9, 1), (1, 17, 3), (16, 1, 3), (2, 2, 3)])
def test_smooth_matches_reference(shape):
    image = blocky_image(1, *shape)
    mask = SS.gaussian_mask(0.8)
    assert len(mask) == 5 and math.isclose(2 * mask[1:].sum() + mask[0], 1.0)
    assert np.array_equal(K.smooth(image, mask), smooth_reference(image, mask))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(14, 17, 3), (12, 12, 1), (1, 23, 3), (19, 1, 3)])
@pytest.mark.parametrize("k,min_size", [(20.0, 1), (100.0, 5), (400.0, 15)])
def test_felzenszwalb_matches_reference(seed, shape, k, min_size):
    image = blocky_image(seed, *shape)
    labels = SS.felzenszwalb(image, k, min_size=min_size)
    assert labels.dtype == np.int64 and labels.shape == shape[:2]
    assert np.array_equal(labels, canonical(labels))  # numbered by first pixel
    assert np.array_equal(labels, felzenszwalb_reference(image, k, min_size))


def test_felzenszwalb_regions_grow_with_k_and_respect_min_size():
    image = blocky_image(5, 40, 40, blocks=8)
    counts = [SS.felzenszwalb(image, k, min_size=1).max() + 1 for k in (10, 100, 1000)]
    assert counts[0] > counts[1] > counts[2] >= 1
    labels = SS.felzenszwalb(image, 10, min_size=30)
    assert np.bincount(labels.ravel()).min() >= 30


def test_felzenszwalb_finds_flat_blocks():
    image = np.zeros((30, 40, 3))
    image[5:20, 10:30] = (200, 40, 40)
    block = np.zeros((30, 40), bool)
    block[5:20, 10:30] = True
    unsmoothed = SS.felzenszwalb(image, 300, sigma=0, min_size=10)
    assert np.array_equal(unsmoothed, block.astype(np.int64))
    # Smoothing blurs the border into rings of their own (FH's behaviour) unless min_size swallows them.
    assert SS.felzenszwalb(image, 300, min_size=10).max() > 1
    smoothed = SS.felzenszwalb(image, 300, min_size=100)
    assert smoothed.max() == 1 and (smoothed[7:18, 12:28] == 1).all()


def test_sort_edges_is_a_stable_sort():
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.random(5000) * 300, np.zeros(300), rng.integers(0, 4, 2000) * 0.5,
                              [np.finfo(np.float32).max, np.finfo(np.float32).tiny]]).astype(np.float32)
    rng.shuffle(weights)
    ids = rng.permutation(len(weights)).astype(np.int32)
    order = np.argsort(weights, kind="stable")
    got_ids, got_weights = K.sort_edges(ids, weights)
    assert np.array_equal(got_ids, ids[order]) and np.array_equal(got_weights, weights[order])
    same = K.sort_edges(np.arange(7, dtype=np.int32), np.zeros(7, np.float32))  # every radix pass skipped
    assert same[0].tolist() == list(range(7))
    assert K.sort_edges(np.zeros(0, np.int32), np.zeros(0, np.float32))[0].shape == (0,)


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.zeros((3, 3, 2), dtype=object), [[1, 2]],
                                 np.full((3, 3), np.nan)])
def test_felzenszwalb_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="image"):
        SS.felzenszwalb(bad, 100)


def test_felzenszwalb_rejects_bad_parameters():
    for k, min_size in ((-1, 5), (float("nan"), 5), (10, 2.5), (10, True)):
        with pytest.raises(ValueError, match="k must be finite"):
            SS.felzenszwalb(np.zeros((4, 4)), k, min_size=min_size)


def test_images_too_large_for_int32_edge_ids():
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (2**15, 2**14, 3))  # no memory behind it
    with pytest.raises(ValueError, match="more than 536870911"):
        selective_search(huge)


# --- region features -----------------------------------------------------------------------------


def test_region_stats_match_reference():
    labels, n, (colour_bins, texture_bins) = small_regions(3)
    sizes, boxes, colour, texture = K.region_stats(labels, n, colour_bins, texture_bins)
    assert n > 5
    for r in range(n):
        ys, xs = np.nonzero(labels == r)
        assert sizes[r] == len(ys)
        assert boxes[r].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        expected_colour = np.concatenate([np.bincount(colour_bins[ys, xs, c], minlength=25) for c in range(3)])
        expected_texture = np.concatenate([np.bincount(texture_bins[ys, xs, t], minlength=10) for t in range(24)])
        np.testing.assert_allclose(colour[r], expected_colour / expected_colour.sum(), rtol=1e-12)
        np.testing.assert_allclose(texture[r], expected_texture / expected_texture.sum(), rtol=1e-12)


def test_neighbour_pairs_match_reference():
    labels, n, _ = small_regions(4)
    expected = set()
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w and labels[y, x] != labels[y + dy, x + dx]:
                        a, b = sorted((labels[y, x], labels[y + dy, x + dx]))
                        expected.add((int(a), int(b)))
    assert K.neighbour_pairs(labels, n).tolist() == sorted(map(list, expected))


def test_colour_bins_and_spaces():
    image = np.array([[[255, 0, 0], [0, 0, 0], [255, 255, 255], [10, 200, 60]]], np.uint8)
    for space, channels in (("hsv", 3), ("lab", 3), ("rgi", 3), ("h", 1), ("i", 1)):
        colour = SS.colour_space(image, space)
        assert colour.shape == (1, 4, channels) and colour.dtype == np.float32
        assert colour.min() >= 0 and colour.max() <= 1
    rgi = SS.colour_space(image, "rgi")
    np.testing.assert_allclose(rgi[0, 0], [1, 0, 1 / 3], atol=1e-6)  # pure red
    np.testing.assert_allclose(rgi[0, 1], [1 / 3, 1 / 3, 0], atol=1e-6)  # black: no chromaticity
    colour_bins, _ = SS.pixel_bins(SS.colour_space(image, "i"))
    assert colour_bins[0, :3, 0].tolist() == [int(0.299 * 255 * 25 / 255), 0, 24]


def texture_bins_reference(gx, gy):
    cos = np.array([1.0, np.sqrt(0.5), 0.0, -np.sqrt(0.5)])
    sin = np.array([0.0, np.sqrt(0.5), 1.0, np.sqrt(0.5)])
    h, w, c = gx.shape
    out = np.zeros((h, w, c, 4, 2), np.uint8)
    for ch in range(c):
        for d in range(4):
            r = cos[d] * gx[:, :, ch].astype(np.float64) + sin[d] * gy[:, :, ch].astype(np.float64)
            for sign, half in ((0, np.maximum(r, 0)), (1, np.maximum(-r, 0))):
                peak = half.max()
                if peak > 0:
                    out[:, :, ch, d, sign] = np.minimum((half / peak * 10).astype(int), 9)
    return out.reshape(h, w, c * 8)


def test_texture_bins_match_reference():
    rng = np.random.default_rng(0)
    gx, gy = rng.normal(size=(2, 13, 11, 3)).astype(np.float32)
    gx[:, :, 2] = 0  # a channel without x gradient: its maps stay at bin 0
    assert np.array_equal(K.texture_bins(gx, gy), texture_bins_reference(gx, gy))


def test_texture_follows_edge_orientation():
    image = np.zeros((21, 21, 3), np.uint8)
    image[:, 11:] = 255  # a vertical edge, dark to bright along +x
    _, bins = SS.pixel_bins(SS.colour_space(image, "i"))
    on_edge = bins[10, 10:12]  # [2 pixels, 8 maps]: 0 deg +/-, 45 +/-, 90 +/-, 135 +/-
    assert (on_edge[:, 0] == 9).any() and (on_edge[:, 1] == 0).all()  # +x derivative only
    assert (on_edge[:, 4:6] == 0).all()  # nothing along y
    assert (bins[10, :5] == 0).all()  # flat far from the edge


# --- similarity and grouping ---------------------------------------------------------------------


def test_similarities_match_reference():
    rng = np.random.default_rng(1)
    colour = rng.random((4, 75))
    colour /= colour.sum(1, keepdims=True)
    texture = rng.random((4, 240))
    texture /= texture.sum(1, keepdims=True)
    sizes = np.array([30.0, 50.0, 7.0, 12.0])
    boxes = np.array([[0, 0, 9, 5], [8, 2, 20, 9], [3, 3, 5, 5], [30, 30, 31, 35]])
    for a, b in ((0, 1), (1, 2), (0, 3)):
        assert K.intersection(colour[a], colour[b]) == pytest.approx(np.minimum(colour[a], colour[b]).sum())
        for use in USES:
            got = K.similarity(a, b, sizes, boxes, colour, texture, np.array(use), 1000.0)
            assert got == similarity_reference(a, b, sizes, boxes, colour, texture, use, 1000.0)
    # By hand: size 1 - 80/1000; fill: the union box is 21 x 10 = 210 pixels, 130 of them empty.
    fill_and_size = K.similarity(0, 1, sizes, boxes, colour, texture, np.array([False, False, True, True]), 1000.0)
    assert fill_and_size == pytest.approx((1 - 80 / 1000) + (1 - 130 / 1000))
    same = K.similarity(0, 0, sizes, boxes, colour, texture, np.array([True, True, False, False]), 1000.0)
    assert same == pytest.approx(2.0)  # identical histograms intersect fully


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("use", USES)
def test_grouping_matches_reference(seed, use):
    labels, n, bins = small_regions(seed, k=20.0)
    regions = SS.region_features(labels, n, bins)
    merges, boxes = K.hierarchical_grouping(*regions, np.array(use), float(labels.size))
    expected_merges, expected_boxes = grouping_reference(*regions, use, float(labels.size))
    assert n > 8 and len(merges) == n - 1  # one region at the end
    assert np.array_equal(merges, expected_merges)
    assert np.array_equal(boxes, expected_boxes)
    assert boxes[-1].tolist() == [0, 0, labels.shape[1] - 1, labels.shape[0] - 1]


def test_grouping_merges_the_most_similar_pair_first():
    # Three stripes: A and B equal in colour, C different; A-B and B-C touch.
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 10:20] = (205, 200, 190)
    image[:, :10] = (200, 200, 200)
    image[:, 20:] = (20, 60, 230)
    colour = SS.colour_space(image, "hsv")
    labels = np.repeat(np.repeat(np.arange(3), 10)[None], 10, axis=0)
    regions = SS.region_features(labels, 3, SS.pixel_bins(colour))
    merges, boxes = K.hierarchical_grouping(*regions, np.array((True, False, False, False)), 300.0)
    assert merges.tolist() == [[0, 1], [2, 3]]
    assert boxes[3].tolist() == [0, 0, 19, 9]


# --- selective_search ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo():
    """A 96 x 128 Shapes image."""
    rng = np.random.default_rng(3)
    image, _ = shapes._draw_image(rng, 96, 128, shapes.PRESETS["hard"])
    return image


def check_boxes(boxes, height, width):
    assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert torch.equal(boxes, boxes.round())
    assert len(torch.unique(boxes, dim=0)) == len(boxes)
    assert [0, 0, width, height] in boxes.tolist()


def test_boxes_valid_and_deterministic(photo):
    boxes = selective_search(photo, seed=0)
    check_boxes(boxes, *photo.shape[:2])
    assert len(boxes) > 100
    assert torch.equal(boxes, selective_search(photo.copy(), seed=0))
    other = selective_search(photo, seed=1)
    assert not torch.equal(boxes, other)  # the ranking is randomised ...
    assert sorted(map(tuple, boxes.tolist())) == sorted(map(tuple, other.tolist()))  # ... the set is not


def test_modes_nest(photo):
    """single's one strategy is among fast's eight, fast's among quality's 80."""
    single, fast, quality = (set(map(tuple, selective_search(photo, mode).tolist()))
                             for mode in ("single", "fast", "quality"))
    assert single < fast < quality


def test_ranking_puts_high_regions_first(photo):
    """The whole image tops 8 hierarchies (value = 1 x U): it ranks near the start, for every seed."""
    height, width = photo.shape[:2]
    positions = [selective_search(photo, seed=seed).tolist().index([0, 0, width, height]) for seed in range(5)]
    assert max(positions) < 30


def test_rank_reference():
    rng = np.random.default_rng(9)
    boxes = rng.integers(0, 4, (200, 4))
    boxes[:, 2:] += boxes[:, :2]
    priority = rng.integers(1, 50, 200)
    got = SS._rank(boxes.copy(), priority, seed=5).long().tolist()
    value = priority * np.random.default_rng(5).random(200)
    expected, seen = [], set()
    for i in sorted(range(200), key=lambda i: value[i]):
        box = tuple(boxes[i])
        if box not in seen:
            seen.add(box)
            expected.append([box[0], box[1], box[2] + 1, box[3] + 1])
    assert got == expected


def test_tiny_uniform_and_thin_images():
    assert selective_search(np.zeros((1, 1, 3), np.uint8)).tolist() == [[0, 0, 1, 1]]
    assert selective_search(np.full((32, 40, 3), 77, np.uint8)).tolist() == [[0, 0, 40, 32]]
    for shape in ((1, 50, 3), (50, 1, 3), (2, 2, 3)):
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        check_boxes(selective_search(image), *shape[:2])


def test_views_give_the_same_boxes(photo):
    view = photo[:, ::-1]
    assert torch.equal(selective_search(view), selective_search(np.ascontiguousarray(view)))


@pytest.mark.parametrize("image,match", [
    (np.zeros((8, 8), np.uint8), "grayscale"),
    (np.zeros((8, 8, 4), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (torch.zeros(8, 8, 3, dtype=torch.uint8), "numpy"),
    ([[[0, 0, 0]]], "numpy"),
])
def test_hostile_images_are_named_errors(image, match):
    with pytest.raises(ValueError, match=match) as info:
        selective_search(image)
    assert "image" in str(info.value)


def test_bad_mode_and_seed():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="mode"):
        selective_search(image, mode="slow")
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            selective_search(image, seed=seed)


def test_recall_on_shapes(tmp_path):
    """Ground-truth boxes (all, occluded ones too) found at IoU >= 0.5 among
    the first 2000 proposals. Measured on these 30 + 20 images at 160 px:
    78/79 (basic) and 112/117 (hard: what it misses are objects of a few
    dozen pixels, below the paper's min_size = k); 50 images of each at
    256 px in benchmarks/selective_search.py. The bounds allow 3 and 11 misses."""
    for preset, num, bound in (("basic", 30, 0.95), ("hard", 20, 0.9)):
        paths = shapes.generate(tmp_path / preset, num_train=num, num_val=0, image_size=160, seed=11,
                                preset=preset)
        with open(paths.coco_train) as f:
            coco = json.load(f)
        found = total = 0
        for info in coco["images"]:
            image = cv2.cvtColor(cv2.imread(os.path.join(paths.image_root, info["file_name"])), cv2.COLOR_BGR2RGB)
            gt = torch.tensor([[x, y, x + w, y + h] for ann in coco["annotations"]
                               if ann["image_id"] == info["id"] for x, y, w, h in [ann["bbox"]]],
                              dtype=torch.float32)
            proposals = selective_search(image)[:2000]
            found += int((box_iou(gt, proposals).max(1).values >= 0.5).sum())
            total += len(gt)
        assert total > 60
        assert found / total > bound, (preset, found, total)
