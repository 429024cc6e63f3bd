"""Numba CPU kernels behind detkit.ops (anchors, box coding, matching, the
elementwise box ops). Each mirrors the torch reference in the module that
calls it, operation for operation, so float32 results round the same way:
scalar constants arrive typed as the arrays' dtype (a bare 0.5 literal would
promote float32 arithmetic to float64 in numba).

Kernels are compiled lazily on first call and cached on disk (cache=True).
"""
import numpy as np
from numba import njit

# Box formats, as integer codes for the kernels.
XYXY, XYWH, CXCYWH = 0, 1, 2


# --- elementwise box ops -------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def box_convert(boxes, in_fmt, out_fmt, half):
    """boxes: [N, 4] -> [N, 4]; converts through xyxy like torchvision."""
    out = np.empty_like(boxes)
    for i in range(boxes.shape[0]):
        a, b, c, d = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        if in_fmt == XYWH:
            a, b, c, d = a, b, a + c, b + d
        elif in_fmt == CXCYWH:
            a, b, c, d = a - half * c, b - half * d, a + half * c, b + half * d
        if out_fmt == XYWH:
            c, d = c - a, d - b
        elif out_fmt == CXCYWH:
            a, b, c, d = (a + c) * half, (b + d) * half, c - a, d - b
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = a, b, c, d
    return out


@njit(cache=True, nogil=True)
def box_area(boxes, corners):
    out = np.empty(boxes.shape[0], dtype=boxes.dtype)
    for i in range(boxes.shape[0]):
        if corners:
            out[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        else:
            out[i] = boxes[i, 2] * boxes[i, 3]
    return out


@njit(cache=True, nogil=True)
def clip_boxes(boxes, height, width, zero):
    out = np.empty_like(boxes)
    for i in range(boxes.shape[0]):
        for k in range(4):
            limit = width if k % 2 == 0 else height
            out[i, k] = min(max(boxes[i, k], zero), limit)
    return out


@njit(cache=True, nogil=True)
def remove_small_boxes(boxes, min_size):
    keep = np.empty(boxes.shape[0], dtype=np.int64)
    n = 0
    for i in range(boxes.shape[0]):
        if boxes[i, 2] - boxes[i, 0] >= min_size and boxes[i, 3] - boxes[i, 1] >= min_size:
            keep[n] = i
            n += 1
    return keep[:n]


# --- anchors -------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _as_dtype(values, like):
    """Integer or float32 values converted to like's dtype (one rounding)."""
    out = np.empty(values.shape[0], dtype=like.dtype)
    for i in range(values.shape[0]):
        out[i] = values[i]
    return out


@njit(cache=True, nogil=True)
def grid_anchors(base, grid_h, grid_w, stride_h, stride_w):
    """base: [A, 4] cell anchors -> [grid_h * grid_w * A, 4], row-major over
    (y, x, anchor): the cell anchors shifted by (x * stride_w, y * stride_h)."""
    na = base.shape[0]
    shift_x = _as_dtype(np.arange(grid_w) * stride_w, base)
    shift_y = _as_dtype(np.arange(grid_h) * stride_h, base)
    out = np.empty((grid_h * grid_w * na, 4), dtype=base.dtype)
    k = 0
    for y in range(grid_h):
        sy = shift_y[y]
        for x in range(grid_w):
            sx = shift_x[x]
            for a in range(na):
                out[k, 0] = sx + base[a, 0]
                out[k, 1] = sy + base[a, 1]
                out[k, 2] = sx + base[a, 2]
                out[k, 3] = sy + base[a, 3]
                k += 1
    return out


@njit(cache=True, nogil=True)
def default_boxes(wh, grid_h, grid_w, x_f, y_f, img_h, img_w, half, out, start):
    """SSD default boxes of one feature map written to out[start:] as xyxy
    pixels; returns the next free row. wh: [P, 2] relative (w, h) pairs in
    out's dtype. Centres ((i + 0.5) / f) are computed in float32, as
    torchvision does, before the cast to out's dtype."""
    f_half = np.float32(0.5)
    centre_x = _as_dtype((np.arange(grid_w).astype(np.float32) + f_half) / np.float32(x_f), out)
    centre_y = _as_dtype((np.arange(grid_h).astype(np.float32) + f_half) / np.float32(y_f), out)
    k = start
    for y in range(grid_h):
        cy = centre_y[y]
        for x in range(grid_w):
            cx = centre_x[x]
            for p in range(wh.shape[0]):
                hw = half * wh[p, 0]
                hh = half * wh[p, 1]
                out[k, 0] = (cx - hw) * img_w
                out[k, 1] = (cy - hh) * img_h
                out[k, 2] = (cx + hw) * img_w
                out[k, 3] = (cy + hh) * img_h
                k += 1
    return k


# --- box coding ----------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _encode_one(ref, prop, weights, half, out):
    """Writes the (dx, dy, dw, dh) of reference box `ref` against `prop`."""
    ex_w = prop[2] - prop[0]
    ex_h = prop[3] - prop[1]
    ex_cx = prop[0] + half * ex_w
    ex_cy = prop[1] + half * ex_h
    gt_w = ref[2] - ref[0]
    gt_h = ref[3] - ref[1]
    gt_cx = ref[0] + half * gt_w
    gt_cy = ref[1] + half * gt_h
    out[0] = weights[0] * (gt_cx - ex_cx) / ex_w
    out[1] = weights[1] * (gt_cy - ex_cy) / ex_h
    out[2] = weights[2] * np.log(gt_w / ex_w)
    out[3] = weights[3] * np.log(gt_h / ex_h)


@njit(cache=True, nogil=True)
def encode(reference_boxes, proposals, weights, half):
    out = np.empty_like(reference_boxes)
    for i in range(reference_boxes.shape[0]):
        _encode_one(reference_boxes[i], proposals[i], weights, half, out[i])
    return out


@njit(cache=True, nogil=True)
def decode(rel_codes, boxes, weights, clip, half):
    """rel_codes: [N, 4K], boxes: [N, 4] -> [N, 4K] decoded xyxy boxes."""
    n, k4 = rel_codes.shape
    out = np.empty_like(rel_codes)
    for i in range(n):
        w = boxes[i, 2] - boxes[i, 0]
        h = boxes[i, 3] - boxes[i, 1]
        cx = boxes[i, 0] + half * w
        cy = boxes[i, 1] + half * h
        for j in range(0, k4, 4):
            dx = rel_codes[i, j] / weights[0]
            dy = rel_codes[i, j + 1] / weights[1]
            dw = min(rel_codes[i, j + 2] / weights[2], clip)
            dh = min(rel_codes[i, j + 3] / weights[3], clip)
            pcx = dx * w + cx
            pcy = dy * h + cy
            hw = half * (np.exp(dw) * w)
            hh = half * (np.exp(dh) * h)
            out[i, j] = pcx - hw
            out[i, j + 1] = pcy - hh
            out[i, j + 2] = pcx + hw
            out[i, j + 3] = pcy + hh
    return out


# --- matching ------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def match(quality, high, low, allow_low_quality):
    """quality: [G, A] -> matches [A] (torchvision's Matcher): the best GT per
    column (first on ties), -1 below `low`, -2 in [low, high); with
    allow_low_quality, columns that are some GT's best keep their best GT."""
    g, a = quality.shape
    best = quality[0].copy()
    matches = np.zeros(a, dtype=np.int64)
    for r in range(1, g):
        for c in range(a):
            if quality[r, c] > best[c]:
                best[c] = quality[r, c]
                matches[c] = r
    all_matches = matches.copy()
    for c in range(a):
        if best[c] < low:
            matches[c] = -1
        elif best[c] < high:
            matches[c] = -2
    if allow_low_quality:
        for r in range(g):
            top = quality[r].max()
            for c in range(a):
                if quality[r, c] == top:
                    matches[c] = all_matches[c]
    return matches


@njit(cache=True, nogil=True)
def force_best_columns(quality, matches):
    """SSDMatcher's second step: each GT's best column (first on ties) is
    matched to that GT; a later GT overwrites an earlier one."""
    for r in range(quality.shape[0]):
        matches[np.argmax(quality[r])] = r
    return matches


@njit(cache=True, nogil=True)
def ssd_assign(anchors, gt_boxes, gt_labels, threshold, weights, half, zero, one):
    """The whole SSD target assignment in one pass over the anchors:
    IoU (as box_iou), SSDMatcher and BoxCoder.encode for the matched anchors.
    Returns (box_targets [A, 4], labels [A]); background rows are 0."""
    na = anchors.shape[0]
    ng = gt_boxes.shape[0]
    targets = np.zeros((na, 4), dtype=anchors.dtype)
    labels = np.zeros(na, dtype=np.int64)
    if ng == 0:
        return targets, labels
    matches = np.full(na, -1, dtype=np.int64)
    best = np.full(na, -one, dtype=anchors.dtype)
    gt_best = np.full(ng, -one, dtype=anchors.dtype)
    gt_best_anchor = np.zeros(ng, dtype=np.int64)
    gt_area = np.empty(ng, dtype=anchors.dtype)
    for g in range(ng):
        gt_area[g] = (gt_boxes[g, 2] - gt_boxes[g, 0]) * (gt_boxes[g, 3] - gt_boxes[g, 1])
    for a in range(na):
        ax1, ay1, ax2, ay2 = anchors[a, 0], anchors[a, 1], anchors[a, 2], anchors[a, 3]
        area = (ax2 - ax1) * (ay2 - ay1)
        for g in range(ng):
            w = min(gt_boxes[g, 2], ax2) - max(gt_boxes[g, 0], ax1)
            h = min(gt_boxes[g, 3], ay2) - max(gt_boxes[g, 1], ay1)
            w = w if w > zero else zero
            h = h if h > zero else zero
            inter = w * h
            union = gt_area[g] + area - inter
            iou = inter / (union if union > zero else one)
            if iou > best[a]:  # first GT wins ties, as torch.max(dim=0)
                best[a] = iou
                matches[a] = g
            if iou > gt_best[g]:  # first anchor wins ties
                gt_best[g] = iou
                gt_best_anchor[g] = a
    for a in range(na):
        if best[a] < threshold:
            matches[a] = -1
    for g in range(ng):
        matches[gt_best_anchor[g]] = g
    for a in range(na):
        m = matches[a]
        if m >= 0:
            labels[a] = gt_labels[m]
            _encode_one(gt_boxes[m], anchors[a], weights, half, targets[a])
    return targets, labels


# --- sampling ------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def split_matches(matched):
    """Indices of positives (>= 1) and negatives (== 0), each ascending."""
    pos = np.empty(matched.shape[0], dtype=np.int64)
    neg = np.empty(matched.shape[0], dtype=np.int64)
    npos = 0
    nneg = 0
    for i in range(matched.shape[0]):
        if matched[i] >= 1:
            pos[npos] = i
            npos += 1
        elif matched[i] == 0:
            neg[nneg] = i
            nneg += 1
    return pos[:npos], neg[:nneg]


@njit(cache=True, nogil=True)
def index_masks(n, pos, neg):
    """uint8 masks of length n with ones at `pos` and at `neg`."""
    pos_mask = np.zeros(n, dtype=np.uint8)
    neg_mask = np.zeros(n, dtype=np.uint8)
    for i in pos:
        pos_mask[i] = 1
    for i in neg:
        neg_mask[i] = 1
    return pos_mask, neg_mask
