"""Numba CPU kernels behind detkit.ops (anchors, box coding, matching, the
elementwise box ops). Each mirrors the torch reference in the module that
calls it, operation for operation, so float32 results round the same way:
scalar constants arrive typed as the arrays' dtype (a bare 0.5 literal would
promote float32 arithmetic to float64 in numba).

Kernels are compiled lazily on first call and cached on disk (cache=True).
They use numpy's error model: numba's default (Python's) guards every
division with a ZeroDivisionError branch, which stops LLVM vectorising the
loops; inputs are validated before they get here.
"""
import numpy as np
from numba import njit

kernel = njit(cache=True, nogil=True, error_model="numpy")

# Box formats, as integer codes for the kernels.
XYXY, XYWH, CXCYWH = 0, 1, 2


# --- elementwise box ops -------------------------------------------------------------------------


@kernel
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


@kernel
def box_area(boxes, corners):
    out = np.empty(boxes.shape[0], dtype=boxes.dtype)
    for i in range(boxes.shape[0]):
        if corners:
            out[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        else:
            out[i] = boxes[i, 2] * boxes[i, 3]
    return out


@kernel
def clip_boxes(boxes, height, width, zero):
    out = np.empty_like(boxes)
    for i in range(boxes.shape[0]):
        for k in range(4):
            limit = width if k % 2 == 0 else height
            out[i, k] = min(max(boxes[i, k], zero), limit)
    return out


@kernel
def remove_small_boxes(boxes, min_size):
    keep = np.empty(boxes.shape[0], dtype=np.int64)
    n = 0
    for i in range(boxes.shape[0]):
        if boxes[i, 2] - boxes[i, 0] >= min_size and boxes[i, 3] - boxes[i, 1] >= min_size:
            keep[n] = i
            n += 1
    return keep[:n]


# --- anchors -------------------------------------------------------------------------------------


@kernel
def _as_dtype(values, like):
    """Integer or float32 values converted to like's dtype (one rounding)."""
    out = np.empty(values.shape[0], dtype=like.dtype)
    for i in range(values.shape[0]):
        out[i] = values[i]
    return out


@kernel
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


@kernel
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


# The transcendental steps (log when encoding, exp when decoding) are left to
# torch's vectorised kernels between two numba passes: a scalar exp/log per box
# would cost more than everything else, and torch's give torchvision's bits.


@kernel
def encode_prepare(reference_boxes, proposals, weights, half):
    """Returns (codes [N, 4] with dx, dy filled, ratios [N, 2] = (gw/pw, gh/ph));
    encode_finish turns log(ratios) into dw, dh."""
    n = reference_boxes.shape[0]
    codes = np.empty_like(reference_boxes)
    ratios = np.empty((n, 2), dtype=reference_boxes.dtype)
    for i in range(n):
        ex_w = proposals[i, 2] - proposals[i, 0]
        ex_h = proposals[i, 3] - proposals[i, 1]
        ex_cx = proposals[i, 0] + half * ex_w
        ex_cy = proposals[i, 1] + half * ex_h
        gt_w = reference_boxes[i, 2] - reference_boxes[i, 0]
        gt_h = reference_boxes[i, 3] - reference_boxes[i, 1]
        gt_cx = reference_boxes[i, 0] + half * gt_w
        gt_cy = reference_boxes[i, 1] + half * gt_h
        codes[i, 0] = weights[0] * (gt_cx - ex_cx) / ex_w
        codes[i, 1] = weights[1] * (gt_cy - ex_cy) / ex_h
        ratios[i, 0] = gt_w / ex_w
        ratios[i, 1] = gt_h / ex_h
    return codes, ratios


@kernel
def encode_finish(codes, log_ratios, weights):
    for i in range(codes.shape[0]):
        codes[i, 2] = weights[2] * log_ratios[i, 0]
        codes[i, 3] = weights[3] * log_ratios[i, 1]
    return codes


@kernel
def decode_prepare(rel_codes, weights, clip):
    """rel_codes: [N, 4K] -> [N, 2K] clamped (dw, dh) pairs, to be exp()-ed."""
    flat = rel_codes.reshape(-1, 4)  # one row per (box, class): a single loop vectorises
    out = np.empty((flat.shape[0], 2), dtype=rel_codes.dtype)
    for r in range(flat.shape[0]):
        dw = flat[r, 2] / weights[2]
        dh = flat[r, 3] / weights[3]
        out[r, 0] = dw if dw < clip else clip
        out[r, 1] = dh if dh < clip else clip
    return out.reshape(rel_codes.shape[0], rel_codes.shape[1] // 2)


@kernel
def decode_finish(rel_codes, boxes, exp_dwh, weights, half):
    """rel_codes: [N, 4K], boxes: [N, 4], exp_dwh: [N, 2K] -> [N, 4K] xyxy boxes."""
    n = boxes.shape[0]
    k = rel_codes.shape[1] // 4
    flat = rel_codes.reshape(-1, 4)
    exp_flat = exp_dwh.reshape(-1, 2)
    out = np.empty_like(flat)
    for r in range(flat.shape[0]):
        i = r // k if k > 1 else r
        w = boxes[i, 2] - boxes[i, 0]
        h = boxes[i, 3] - boxes[i, 1]
        cx = boxes[i, 0] + half * w
        cy = boxes[i, 1] + half * h
        pcx = flat[r, 0] / weights[0] * w + cx
        pcy = flat[r, 1] / weights[1] * h + cy
        hw = half * (exp_flat[r, 0] * w)
        hh = half * (exp_flat[r, 1] * h)
        out[r, 0] = pcx - hw
        out[r, 1] = pcy - hh
        out[r, 2] = pcx + hw
        out[r, 3] = pcy + hh
    return out.reshape(n, rel_codes.shape[1])


# --- matching ------------------------------------------------------------------------------------


@kernel
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


@kernel
def force_best_columns(quality, matches):
    """SSDMatcher's second step: each GT's best column (first on ties) is
    matched to that GT; a later GT overwrites an earlier one."""
    for r in range(quality.shape[0]):
        matches[np.argmax(quality[r])] = r
    return matches


# --- sampling ------------------------------------------------------------------------------------


@kernel
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


@kernel
def index_masks(n, pos, neg):
    """uint8 masks of length n with ones at `pos` and at `neg`."""
    pos_mask = np.zeros(n, dtype=np.uint8)
    neg_mask = np.zeros(n, dtype=np.uint8)
    for i in pos:
        pos_mask[i] = 1
    for i in neg:
        neg_mask[i] = 1
    return pos_mask, neg_mask


# --- RoIAlign backward ---------------------------------------------------------------------------


@kernel
def roi_align_samples(rois, height, width, spatial_scale, pooled_h, pooled_w, grid, aligned, values):
    """Every bilinear sample of torchvision's CPU RoIAlign (fixed sampling
    ratio `grid`), computed once, operation for operation as its
    bilinear_interpolate_gradient: the output bin k*PH*PW + ph*PW + pw (-1 for
    a sample off the map, which torchvision skips), the four flat corner
    indices y*W + x and their bilinear weights. `values` holds 0, 1, ...,
    max(H, W, PH, PW, grid) typed as the rois, so the arithmetic rounds as torchvision's does."""
    zero, one, half = values[0], values[1], values[1] / (values[1] + values[1])
    offset = half if aligned else zero
    f_height, f_width = values[height], values[width]
    total = rois.shape[0] * pooled_h * pooled_w * grid * grid
    image = np.empty(total, np.int64)
    out_bin = np.full(total, -1, np.int64)
    corners = np.zeros((total, 4), np.int64)
    weights = np.zeros((total, 4), rois.dtype)
    s = 0
    for k in range(rois.shape[0]):
        start_w, start_h = rois[k, 1] * spatial_scale - offset, rois[k, 2] * spatial_scale - offset
        roi_w = rois[k, 3] * spatial_scale - offset - start_w
        roi_h = rois[k, 4] * spatial_scale - offset - start_h
        if not aligned:
            roi_h, roi_w = max(roi_h, one), max(roi_w, one)
        bin_h, bin_w = roi_h / values[pooled_h], roi_w / values[pooled_w]
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                for iy in range(grid):
                    y = start_h + values[ph] * bin_h + (values[iy] + half) * bin_h / values[grid]
                    for ix in range(grid):
                        x = start_w + values[pw] * bin_w + (values[ix] + half) * bin_w / values[grid]
                        image[s] = int(rois[k, 0])
                        if not (y < -one or y > f_height or x < -one or x > f_width):
                            out_bin[s] = (k * pooled_h + ph) * pooled_w + pw
                            yy, xx = max(y, zero), max(x, zero)
                            y_low, x_low = int(yy), int(xx)
                            if y_low >= height - 1:
                                y_low = y_high = height - 1
                                yy = values[y_low]
                            else:
                                y_high = y_low + 1
                            if x_low >= width - 1:
                                x_low = x_high = width - 1
                                xx = values[x_low]
                            else:
                                x_high = x_low + 1
                            ly, lx = yy - values[y_low], xx - values[x_low]
                            hy, hx = one - ly, one - lx
                            corners[s, 0], corners[s, 1] = y_low * width + x_low, y_low * width + x_high
                            corners[s, 2], corners[s, 3] = y_high * width + x_low, y_high * width + x_high
                            weights[s, 0], weights[s, 1] = hy * hx, hy * lx
                            weights[s, 2], weights[s, 3] = ly * hx, ly * lx
                        s += 1
    return image, out_bin, corners, weights


@kernel
def roi_align_gather(features, image, corners, weights, count, out, roi_start, roi_stop):
    """out[k, c, b] = RoIAlign's forward for rois k in [roi_start, roi_stop):
    the mean over bin b's samples (roi_align_samples, in their order) of
    w1*v1 + w2*v2 + w3*v3 + w4*v4, each summed as torchvision's CPU forward
    does (off-map samples add 0 * the image's first pixel, as its zero
    PreCalc does). features is channels-last [N, H*W, C]: the inner loop runs
    over contiguous channels and vectorises. out: [K, C, bins]. Callers run
    disjoint roi ranges on separate threads (the GIL is released)."""
    channels, bins = out.shape[1], out.shape[2]
    per_bin = image.shape[0] // max(1, out.shape[0] * bins)
    total = np.empty(channels, features.dtype)
    for k in range(roi_start, roi_stop):
        for b in range(bins):
            total[:] = 0
            start = (k * bins + b) * per_bin
            for s in range(start, start + per_bin):
                pixels = features[image[s]]
                r1, r2 = pixels[corners[s, 0]], pixels[corners[s, 1]]
                r3, r4 = pixels[corners[s, 2]], pixels[corners[s, 3]]
                w1, w2, w3, w4 = weights[s, 0], weights[s, 1], weights[s, 2], weights[s, 3]
                for c in range(channels):
                    total[c] += w1 * r1[c] + w2 * r2[c] + w3 * r3[c] + w4 * r4[c]
            for c in range(channels):
                out[k, c, b] = total[c] / count


@kernel
def roi_align_scatter(grad_out, image, out_bin, corners, weights, count, grad_in, channel_start, channel_stop):
    """grad_in[n, corner, c] += grad_out[bin, c] * weight / count for every
    sample and every channel c in [channel_start, channel_stop), samples in
    torchvision's order (so each element sums its terms in torchvision's
    order). grad_in is channels-last [N, H*W, C]: the inner loop runs over
    contiguous channels of one row and vectorises. Callers run disjoint
    channel ranges on separate threads (the GIL is released)."""
    for s in range(image.shape[0]):
        if out_bin[s] < 0:
            continue
        row = grad_out[out_bin[s]]
        for j in range(4):
            weight = weights[s, j]
            target = grad_in[image[s], corners[s, j]]
            for c in range(channel_start, channel_stop):
                target[c] += row[c] * weight / count
