"""Numba kernels behind detkit.ops.selective_search: Felzenszwalb-Huttenlocher
graph segmentation, the per-pixel histogram bins, region features and the
hierarchical grouping loop of Uijlings et al. (IJCV 2013).

Arithmetic is float64 and in a fixed order (sequential sums, no fastmath), so
the plain-Python references in the tests reproduce every value bit for bit and
therefore every tie-break. Inputs are validated by the caller.
"""
import numpy as np
from numba import njit

kernel = njit(cache=True, nogil=True, error_model="numpy")

COLOUR_BINS = 25  # per channel (the paper)
TEXTURE_BINS = 10  # per channel and orientation (the paper)
ORIENTATIONS = 8  # both signs of 4 steered directions


# --- Felzenszwalb-Huttenlocher segmentation ------------------------------------------------------


@kernel
def smooth(image, mask):
    """image: float64 [H, W, C]; mask: float64 [L], half of a normalised
    Gaussian (mask[0] the centre). FH's convolve_even along x, then y, with
    edge pixels repeated beyond the border."""
    h, w, c = image.shape
    taps = mask.shape[0]
    tmp = np.empty_like(image)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                s = mask[0] * image[y, x, ch]
                for i in range(1, taps):
                    s += mask[i] * (image[y, max(x - i, 0), ch] + image[y, min(x + i, w - 1), ch])
                tmp[y, x, ch] = s
    out = np.empty_like(image)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                s = mask[0] * tmp[y, x, ch]
                for i in range(1, taps):
                    s += mask[i] * (tmp[max(y - i, 0), x, ch] + tmp[min(y + i, h - 1), x, ch])
                out[y, x, ch] = s
    return out


@kernel
def grid_edges(image):
    """The 8-connected grid graph of image [H, W, C] in FH's order: for each
    pixel p in raster order its right, lower, lower-right and upper-right
    neighbour (direction d = 0..3). Returns edge ids int32 [E] (p * 4 + d)
    and weights float32 [E], the Euclidean colour distance (FH's float:
    computed in float64, rounded once)."""
    h, w, c = image.shape
    ids = np.empty(4 * h * w, np.int32)
    weight = np.empty(4 * h * w, np.float32)
    m = 0
    for y in range(h):
        for x in range(w):
            for d in range(4):
                yy, xx = y + (0, 1, 1, -1)[d], x + (1, 0, 1, 1)[d]
                if 0 <= yy < h and xx < w:
                    s = 0.0
                    for ch in range(c):
                        diff = image[y, x, ch] - image[yy, xx, ch]
                        s += diff * diff
                    ids[m], weight[m] = (y * w + x) * 4 + d, np.sqrt(s)
                    m += 1
    return ids[:m], weight[:m]


@kernel
def sort_edges(ids, weight):
    """(ids, weight) reordered by non-decreasing weight, equal weights in
    input order: an LSD radix sort of the non-negative float32 bit patterns
    (which order like the values), 3 passes of 11 bits, several times faster
    than a comparison sort on the million edges of a VOC-sized image."""
    n = weight.shape[0]
    keys, values = weight.view(np.uint32).copy(), ids.copy()
    keys_tmp, values_tmp = np.empty_like(keys), np.empty_like(values)
    for shift in (0, 11, 22):
        count = np.zeros(2049, np.int64)
        for i in range(n):
            count[((keys[i] >> shift) & 2047) + 1] += 1
        if count.max() == n:  # one digit for all: the pass would move nothing
            continue
        for d in range(2048):
            count[d + 1] += count[d]
        for i in range(n):
            d = (keys[i] >> shift) & 2047
            keys_tmp[count[d]], values_tmp[count[d]] = keys[i], values[i]
            count[d] += 1
        keys, keys_tmp = keys_tmp, keys
        values, values_tmp = values_tmp, values
    return values, keys.view(np.float32)


@kernel
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@kernel
def _join(parent, size, a, b):
    """Union by size of roots a != b; returns the new root."""
    if size[a] < size[b]:
        a, b = b, a
    parent[b] = a
    size[a] += size[b]
    return a


@kernel
def segment(image, k, min_size):
    """FH segmentation of a smoothed image [H, W, C]: edges by increasing
    weight (ties in graph order) join two components when the weight is at
    most each one's largest internal edge + k / |C|; then components smaller
    than min_size are joined along the edges in the same order. Returns
    int64 labels [H, W], 0..n-1 numbered by first pixel in raster order, and n.
    (Partitions do not depend on which element is a root, so the union-find
    details are free.)"""
    h, w, _ = image.shape
    ids, weight = sort_edges(*grid_edges(image))
    step = np.array([1, w, w + 1, 1 - w], np.int32)
    n = h * w
    parent = np.arange(n).astype(np.int32)
    size = np.ones(n, np.int32)
    threshold = np.full(n, k, np.float64)  # k / |C| for a single pixel
    for i in range(ids.shape[0]):
        p = ids[i] >> 2
        a, b = _find(parent, p), _find(parent, p + step[ids[i] & 3])
        if a != b and weight[i] <= threshold[a] and weight[i] <= threshold[b]:
            root = _join(parent, size, a, b)
            threshold[root] = weight[i] + k / size[root]
    for i in range(ids.shape[0]):
        p = ids[i] >> 2
        a, b = _find(parent, p), _find(parent, p + step[ids[i] & 3])
        if a != b and (size[a] < min_size or size[b] < min_size):
            _join(parent, size, a, b)
    label_of = np.full(n, -1, np.int64)
    labels = np.empty(n, np.int64)
    count = 0
    for p in range(n):
        root = _find(parent, p)
        if label_of[root] < 0:
            label_of[root] = count
            count += 1
        labels[p] = label_of[root]
    return labels.reshape(h, w), count


# --- region features -----------------------------------------------------------------------------


@kernel
def texture_bins(gx, gy):
    """gx, gy: float32 [H, W, C] Gaussian derivatives of each channel ->
    uint8 [H, W, 8C]: map c*8 + o is max(0, +-(cos t * gx + sin t * gy)) for
    t = 0, 45, 90, 135 degrees (o = 2*d for +, 2*d + 1 for -), divided by its
    largest value in the image and cut into TEXTURE_BINS equal bins."""
    h, w, c = gx.shape
    cos = np.array([1.0, np.sqrt(0.5), 0.0, -np.sqrt(0.5)])
    sin = np.array([0.0, np.sqrt(0.5), 1.0, np.sqrt(0.5)])
    peak = np.zeros(c * ORIENTATIONS)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                for d in range(4):
                    r = cos[d] * gx[y, x, ch] + sin[d] * gy[y, x, ch]
                    o = ch * ORIENTATIONS + 2 * d
                    peak[o] = max(peak[o], r)
                    peak[o + 1] = max(peak[o + 1], -r)
    out = np.zeros((h, w, c * ORIENTATIONS), np.uint8)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                for d in range(4):
                    r = cos[d] * gx[y, x, ch] + sin[d] * gy[y, x, ch]
                    o = ch * ORIENTATIONS + 2 * d
                    if r > 0.0:
                        out[y, x, o] = min(int(r / peak[o] * TEXTURE_BINS), TEXTURE_BINS - 1)
                    elif r < 0.0:
                        out[y, x, o + 1] = min(int(-r / peak[o + 1] * TEXTURE_BINS), TEXTURE_BINS - 1)
    return out


@kernel
def region_stats(labels, n, colour_bins, texture_bins):
    """Per region of labels [H, W] (values 0..n-1): size (float64 [n]), box
    (int64 [n, 4] inclusive pixel x1, y1, x2, y2), and L1-normalised colour
    (float64 [n, C*COLOUR_BINS]) and texture (float64 [n, T*TEXTURE_BINS])
    histograms of the per-pixel bins colour_bins [H, W, C], texture_bins [H, W, T]."""
    h, w = labels.shape
    cc, tc = colour_bins.shape[2], texture_bins.shape[2]
    sizes = np.zeros(n)
    boxes = np.empty((n, 4), np.int64)
    boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3] = w, h, -1, -1
    colour = np.zeros((n, cc * COLOUR_BINS))
    texture = np.zeros((n, tc * TEXTURE_BINS))
    for y in range(h):
        for x in range(w):
            r = labels[y, x]
            sizes[r] += 1.0
            boxes[r, 0], boxes[r, 1] = min(boxes[r, 0], x), min(boxes[r, 1], y)
            boxes[r, 2], boxes[r, 3] = max(boxes[r, 2], x), max(boxes[r, 3], y)
            for ch in range(cc):
                colour[r, ch * COLOUR_BINS + colour_bins[y, x, ch]] += 1.0
            for t in range(tc):
                texture[r, t * TEXTURE_BINS + texture_bins[y, x, t]] += 1.0
    for r in range(n):
        colour[r] /= sizes[r] * cc
        texture[r] /= sizes[r] * tc
    return sizes, boxes, colour, texture


@kernel
def neighbour_pairs(labels, n):
    """Pairs (a < b) of regions that touch in the 8-connected grid: int64 [P, 2], sorted."""
    h, w = labels.shape
    keys = np.empty(4 * h * w, np.int64)
    m = 0
    for y in range(h):
        for x in range(w):
            a = labels[y, x]
            for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and xx < w and labels[yy, xx] != a:
                    b = labels[yy, xx]
                    keys[m] = min(a, b) * n + max(a, b)
                    m += 1
    keys = np.unique(keys[:m])
    pairs = np.empty((keys.shape[0], 2), np.int64)
    for i in range(keys.shape[0]):
        pairs[i, 0], pairs[i, 1] = keys[i] // n, keys[i] % n
    return pairs


# --- hierarchical grouping -----------------------------------------------------------------------


@kernel
def intersection(h1, h2):
    """Histogram intersection sum_k min(h1[k], h2[k]), summed in order."""
    s = 0.0
    for i in range(h1.shape[0]):
        s += min(h1[i], h2[i])
    return s


@kernel
def similarity(a, b, sizes, boxes, colour, texture, use, image_size):
    """s(a, b) = colour + texture + size + fill similarity, each term where
    use[0..3] says so (the paper's a_i in {0, 1}), added in that order."""
    s = 0.0
    if use[0]:
        s += intersection(colour[a], colour[b])
    if use[1]:
        s += intersection(texture[a], texture[b])
    if use[2]:
        s += 1.0 - (sizes[a] + sizes[b]) / image_size
    if use[3]:
        bw = max(boxes[a, 2], boxes[b, 2]) - min(boxes[a, 0], boxes[b, 0]) + 1
        bh = max(boxes[a, 3], boxes[b, 3]) - min(boxes[a, 1], boxes[b, 1]) + 1
        s += 1.0 - (bw * bh - sizes[a] - sizes[b]) / image_size
    return s


@kernel
def merge_regions(t, a, b, sizes, boxes, colour, texture):
    """Region t := a + b: sizes add, boxes unite, histograms are size-weighted means."""
    sa, sb = sizes[a], sizes[b]
    st = sa + sb
    sizes[t] = st
    boxes[t, 0], boxes[t, 1] = min(boxes[a, 0], boxes[b, 0]), min(boxes[a, 1], boxes[b, 1])
    boxes[t, 2], boxes[t, 3] = max(boxes[a, 2], boxes[b, 2]), max(boxes[a, 3], boxes[b, 3])
    for i in range(colour.shape[1]):
        colour[t, i] = (sa * colour[a, i] + sb * colour[b, i]) / st
    for i in range(texture.shape[1]):
        texture[t, i] = (sa * texture[a, i] + sb * texture[b, i]) / st


@kernel
def _grow(rows):
    out = np.empty((2 * rows.shape[0], rows.shape[1]), rows.dtype)
    out[: rows.shape[0]] = rows
    return out


@kernel
def _first(heap, i, j):
    """Whether heap row i pops before row j: higher similarity, then lower a, then lower b."""
    if heap[i, 0] != heap[j, 0]:
        return heap[i, 0] > heap[j, 0]
    if heap[i, 1] != heap[j, 1]:
        return heap[i, 1] < heap[j, 1]
    return heap[i, 2] < heap[j, 2]


@kernel
def _swap(heap, i, j):
    for k in range(3):
        heap[i, k], heap[j, k] = heap[j, k], heap[i, k]


@kernel
def _push(heap, count, s, a, b):
    if count == heap.shape[0]:
        heap = _grow(heap)
    heap[count, 0], heap[count, 1], heap[count, 2] = s, a, b
    i = count
    while i > 0 and _first(heap, i, (i - 1) // 2):
        _swap(heap, i, (i - 1) // 2)
        i = (i - 1) // 2
    return heap, count + 1


@kernel
def _pop(heap, count):
    """Removes row 0; returns the new count."""
    count -= 1
    for k in range(3):
        heap[0, k] = heap[count, k]
    i = 0
    while True:
        best = i
        for child in (2 * i + 1, 2 * i + 2):
            if child < count and _first(heap, child, best):
                best = child
        if best == i:
            return count
        _swap(heap, i, best)
        i = best


@kernel
def _link(links, count, head, a, b):
    """Prepends b to a's neighbour list (links rows: neighbour, next row)."""
    if count == links.shape[0]:
        links = _grow(links)
    links[count, 0], links[count, 1] = b, head[a]
    head[a] = count
    return links, count + 1


@kernel
def hierarchical_grouping(sizes0, boxes0, colour0, texture0, pairs, use, image_size):
    """Greedy grouping of n regions (features as region_stats returns them,
    neighbours as neighbour_pairs): merge the most similar neighbouring pair
    (ties: lower a, then lower b) into region n + m, whose neighbours are
    those of both; repeat until no pair is left. Similarities live in a heap;
    pairs with a merged region are dropped when popped.

    Returns merges int64 [M, 2] (regions a, b forming n + m) and boxes int64
    [n + M, 4] (inclusive pixel x1, y1, x2, y2) of all regions."""
    n = sizes0.shape[0]
    total = max(2 * n - 1, n)
    sizes = np.empty(total)
    boxes = np.empty((total, 4), np.int64)
    colour = np.empty((total, colour0.shape[1]))
    texture = np.empty((total, texture0.shape[1]))
    sizes[:n], boxes[:n], colour[:n], texture[:n] = sizes0, boxes0, colour0, texture0
    alive = np.zeros(total, np.bool_)
    alive[:n] = True
    seen = np.full(total, -1, np.int64)
    head = np.full(total, -1, np.int64)
    links = np.empty((max(16, 4 * pairs.shape[0]), 2), np.int64)
    heap = np.empty((max(16, 2 * pairs.shape[0]), 3))
    nl = nh = 0
    for p in range(pairs.shape[0]):
        a, b = pairs[p, 0], pairs[p, 1]
        links, nl = _link(links, nl, head, a, b)
        links, nl = _link(links, nl, head, b, a)
        heap, nh = _push(heap, nh, similarity(a, b, sizes, boxes, colour, texture, use, image_size), a, b)
    merges = np.empty((total - n, 2), np.int64)
    m = 0
    while nh > 0:
        a, b = int(heap[0, 1]), int(heap[0, 2])
        nh = _pop(heap, nh)
        if not (alive[a] and alive[b]):
            continue
        t = n + m
        merge_regions(t, a, b, sizes, boxes, colour, texture)
        alive[a] = alive[b] = False
        alive[t] = True
        merges[m, 0], merges[m, 1] = a, b
        m += 1
        for r in (a, b):
            e = head[r]
            while e >= 0:
                u = links[e, 0]
                if alive[u] and seen[u] != t:
                    seen[u] = t
                    links, nl = _link(links, nl, head, t, u)
                    links, nl = _link(links, nl, head, u, t)
                    s = similarity(u, t, sizes, boxes, colour, texture, use, image_size)
                    heap, nh = _push(heap, nh, s, u, t)
                e = links[e, 1]
    return merges[:m], boxes[: n + m]
