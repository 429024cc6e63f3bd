"""Numba kernels of the COCO evaluation: pycocotools' COCOeval.computeIoU,
evaluateImg and accumulate, step for step, over flat arrays.

Ground truth and detections are grouped by pair p = k * I + i (category k,
image i, both in sorted-id order) with CSR offsets: the pair's rows are
[off[p], off[p + 1]). Comparisons, sorts (stable mergesort) and float64
arithmetic follow pycocotools', so the precision arrays are equal, not close.
"""
import numpy as np
from numba import njit

kernel = njit(cache=True, nogil=True, error_model="numpy")


@kernel
def select_detections(dt_off, dt_score, max_det):
    """Per pair: detections by decreasing score (stable), the first max_det.
    Returns (selected row indices, their CSR offsets)."""
    npairs = dt_off.shape[0] - 1
    sel_off = np.zeros(npairs + 1, dtype=np.int64)
    for p in range(npairs):
        sel_off[p + 1] = sel_off[p] + min(dt_off[p + 1] - dt_off[p], max_det)
    sel = np.empty(sel_off[npairs], dtype=np.int64)
    for p in range(npairs):
        lo, hi = dt_off[p], dt_off[p + 1]
        if hi == lo:
            continue
        order = np.argsort(-dt_score[lo:hi], kind="mergesort")
        for j in range(sel_off[p + 1] - sel_off[p]):
            sel[sel_off[p] + j] = lo + order[j]
    return sel, sel_off


@kernel
def iou_offsets(sel_off, gt_off):
    """CSR offsets of each pair's [D, G] IoU block."""
    npairs = gt_off.shape[0] - 1
    off = np.zeros(npairs + 1, dtype=np.int64)
    for p in range(npairs):
        off[p + 1] = off[p] + (sel_off[p + 1] - sel_off[p]) * (gt_off[p + 1] - gt_off[p])
    return off


@kernel
def best_gt(ious, row, order, taken, gt_crowd, g0, gt_ig, threshold):
    """pycocotools' match of one detection: the place k in `order` of the GT
    it takes (-1: none). ious[row + g] is its IoU with GT g of the pair; GT
    already taken are skipped unless crowd; once a kept GT is matched, the
    ignored ones (sorted last) are not tried."""
    best = min(threshold, 1 - 1e-10)
    m = -1
    for k in range(order.shape[0]):
        g = order[k]
        if taken[k] and not gt_crowd[g0 + g]:
            continue
        if m > -1 and gt_ig[order[m]] == 0 and gt_ig[g] == 1:
            break
        v = ious[row + g]
        if v < best:
            continue
        best = v
        m = k
    return m


@kernel
def bbox_ious(dt_box, sel, sel_off, gt_box, gt_crowd, gt_off, iou_off):
    """pycocotools' bbIou on xywh boxes, per pair: ious[d, g] row-major.
    A crowd GT's union is the detection's own area."""
    out = np.zeros(iou_off[-1], dtype=np.float64)
    for p in range(gt_off.shape[0] - 1):
        g0, g1 = gt_off[p], gt_off[p + 1]
        ng = g1 - g0
        base = iou_off[p]
        for j in range(sel_off[p + 1] - sel_off[p]):
            d = sel[sel_off[p] + j]
            dx, dy, dw, dh = dt_box[d, 0], dt_box[d, 1], dt_box[d, 2], dt_box[d, 3]
            da = dw * dh
            for g in range(ng):
                gx, gy, gw, gh = gt_box[g0 + g, 0], gt_box[g0 + g, 1], gt_box[g0 + g, 2], gt_box[g0 + g, 3]
                w = min(dw + dx, gw + gx) - max(dx, gx)
                if w <= 0:
                    continue
                h = min(dh + dy, gh + gy) - max(dy, gy)
                if h <= 0:
                    continue
                inter = w * h
                union = da if gt_crowd[g0 + g] else da + gw * gh - inter
                out[base + j * ng + g] = inter / union
    return out


@kernel
def evaluate_pairs(ious, iou_off, sel, sel_off, dt_area, dt_id, gt_area, gt_crowd, gt_id, gt_off, area_rngs,
                   iou_thrs):
    """evaluateImg for every (pair, area range) at maxDet = the largest.

    Returns per area range a and IoU threshold t, for each selected
    detection: matched (1 when matched to a GT whose id is not 0: pycocotools
    stores the GT id and reads 0 as unmatched) and ignored; and per (a, pair)
    the number of GT that are not ignored."""
    n_area, n_thr = area_rngs.shape[0], iou_thrs.shape[0]
    npairs = gt_off.shape[0] - 1
    total = sel.shape[0]
    matched = np.zeros((n_area, n_thr, total), dtype=np.uint8)
    ignored = np.zeros((n_area, n_thr, total), dtype=np.uint8)
    n_pos = np.zeros((n_area, npairs), dtype=np.int64)
    for p in range(npairs):
        g0, ng = gt_off[p], gt_off[p + 1] - gt_off[p]
        s0, nd = sel_off[p], sel_off[p + 1] - sel_off[p]
        if ng == 0 and nd == 0:
            continue
        base = iou_off[p]
        gt_ig = np.empty(ng, dtype=np.int64)
        gt_taken = np.zeros((n_thr, ng), dtype=np.uint8)
        for a in range(n_area):
            lo, hi = area_rngs[a, 0], area_rngs[a, 1]
            for g in range(ng):
                area = gt_area[g0 + g]
                gt_ig[g] = 1 if (gt_crowd[g0 + g] or area < lo or area > hi) else 0
            order = np.argsort(gt_ig, kind="mergesort")  # GT to ignore go last
            n_pos[a, p] = ng - gt_ig.sum()
            gt_taken[:] = 0
            if ng > 0:
                for t in range(n_thr):
                    for j in range(nd):
                        m = best_gt(ious, base + j * ng, order, gt_taken[t], gt_crowd, g0, gt_ig, iou_thrs[t])
                        if m == -1:
                            continue
                        ignored[a, t, s0 + j] = gt_ig[order[m]]
                        matched[a, t, s0 + j] = gt_id[g0 + order[m]] != 0
                        gt_taken[t, m] = 1  # pycocotools stores the detection id, always >= 1
            # Unmatched detections outside the area range are ignored too.
            for j in range(nd):
                area = dt_area[sel[s0 + j]]
                if area < lo or area > hi:
                    for t in range(n_thr):
                        if not matched[a, t, s0 + j]:
                            ignored[a, t, s0 + j] = 1
    return matched, ignored, n_pos


@kernel
def accumulate(matched, ignored, n_pos, sel, sel_off, gt_off, dt_score, n_cat, n_img, max_dets, rec_thrs):
    """accumulate: precision [T, R, K, A, M], recall [T, K, A, M] and scores
    [T, R, K, A, M]; -1 where a category has no GT (or no pair at all)."""
    n_area, n_thr = matched.shape[0], matched.shape[1]
    n_rec, n_max = rec_thrs.shape[0], max_dets.shape[0]
    precision = -np.ones((n_thr, n_rec, n_cat, n_area, n_max))
    recall = -np.ones((n_thr, n_cat, n_area, n_max))
    scores = -np.ones((n_thr, n_rec, n_cat, n_area, n_max))
    eps = np.spacing(1.0)
    for k in range(n_cat):
        for a in range(n_area):
            for m in range(n_max):
                max_det = max_dets[m]
                total, npig, any_pair = 0, 0, False
                for i in range(n_img):
                    p = k * n_img + i
                    if gt_off[p + 1] == gt_off[p] and sel_off[p + 1] == sel_off[p]:
                        continue  # evaluateImg returned None
                    any_pair = True
                    total += min(sel_off[p + 1] - sel_off[p], max_det)
                    npig += n_pos[a, p]
                if not any_pair or npig == 0:
                    continue
                picked = np.empty(total, dtype=np.int64)  # positions in sel, image by image
                n = 0
                for i in range(n_img):
                    p = k * n_img + i
                    for j in range(min(sel_off[p + 1] - sel_off[p], max_det)):
                        picked[n] = sel_off[p] + j
                        n += 1
                neg_scores = np.empty(total)
                for j in range(total):
                    neg_scores[j] = -dt_score[sel[picked[j]]]
                order = np.argsort(neg_scores, kind="mergesort")
                rc = np.empty(total)
                pr = np.empty(total)
                for t in range(n_thr):
                    tp, fp = 0, 0
                    for j in range(total):
                        s = picked[order[j]]
                        if not ignored[a, t, s]:
                            if matched[a, t, s]:
                                tp += 1
                            else:
                                fp += 1
                        rc[j] = tp / npig
                        pr[j] = tp / (float(fp) + float(tp) + eps)
                    recall[t, k, a, m] = rc[total - 1] if total else 0.0
                    for j in range(total - 1, 0, -1):  # precision envelope
                        if pr[j] > pr[j - 1]:
                            pr[j - 1] = pr[j]
                    thresholds = np.searchsorted(rc, rec_thrs)  # side="left"
                    for r in range(n_rec):
                        q = thresholds[r]
                        if q >= total:
                            for rr in range(r, n_rec):
                                precision[t, rr, k, a, m] = 0.0
                                scores[t, rr, k, a, m] = 0.0
                            break
                        precision[t, r, k, a, m] = pr[q]
                        scores[t, r, k, a, m] = -neg_scores[order[q]]
    return precision, recall, scores
