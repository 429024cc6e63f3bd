"""Numba kernels of the error analysis (detkit.evaluation.analysis).

Arrays follow detkit.evaluation._kernels: ground truth rows and selected
detections are grouped by pair p = k * I + i (category k, image i); a selected
detection is named by its position s in `sel`. The analysis adds a second
grouping, by image, over all categories: `*_by_img` lists positions (or GT
rows) image by image with CSR offsets `*_img_off`, and an image's IoU block
[D_i, G_i] is stored row-major from `block_off[i]`.
"""
import numpy as np
from numba import njit

from ._kernels import best_gt

kernel = njit(cache=True, nogil=True, error_model="numpy")

# Detection outcomes at one IoU threshold, from COCO's matching.
TP, FP, IGNORED = 0, 1, 2
# TIDE's error types, in TIDE's order; MISS belongs to ground truth, the others to detections.
NONE, CLS, LOC, BOTH, DUPE, BKG, MISS = 0, 1, 2, 3, 4, 5, 6
# What fixed_aps() fixes, in its output's order: nothing, the six types, then TIDE's special
# errors: every false positive (perfect precision) and every false negative (perfect recall).
MODES = ("base", "cls", "loc", "both", "dupe", "bkg", "miss", "FP", "FN")
N_MODES, FP_MODE, FN_MODE = 9, 7, 8  # numba folds these; len(MODES) it would compute per call


@kernel
def matched_gt(ious, iou_off, sel_off, gt_area, gt_crowd, gt_off, area_lo, area_hi, iou_thrs):
    """The GT row each selected detection is matched to at each IoU threshold
    (-1: none), by evaluate_pairs' rules for one area range. Returns [T, S]."""
    n_thr = iou_thrs.shape[0]
    out = -np.ones((n_thr, sel_off[-1]), dtype=np.int64)
    for p in range(gt_off.shape[0] - 1):
        g0, ng = gt_off[p], gt_off[p + 1] - gt_off[p]
        s0, nd = sel_off[p], sel_off[p + 1] - sel_off[p]
        if ng == 0 or nd == 0:
            continue
        base = iou_off[p]
        gt_ig = np.empty(ng, dtype=np.int64)
        for g in range(ng):
            area = gt_area[g0 + g]
            gt_ig[g] = 1 if (gt_crowd[g0 + g] or area < area_lo or area > area_hi) else 0
        order = np.argsort(gt_ig, kind="mergesort")  # GT to ignore go last, as in evaluate_pairs
        taken = np.zeros(ng, dtype=np.uint8)
        for t in range(n_thr):
            taken[:] = 0
            for j in range(nd):
                m = best_gt(ious, base + j * ng, order, taken, gt_crowd, g0, gt_ig, iou_thrs[t])
                if m > -1:
                    out[t, s0 + j] = g0 + order[m]
                    taken[m] = 1
    return out


@kernel
def image_box_ious(det_box, det_rows, det_img_off, gt_box, gt_rows, gt_img_off, block_off):
    """IoU of every listed detection with every listed GT of its image, all
    categories; xywh boxes, pycocotools' formula for non-crowd GT."""
    out = np.zeros(block_off[-1], dtype=np.float64)
    for i in range(det_img_off.shape[0] - 1):
        d0, nd = det_img_off[i], det_img_off[i + 1] - det_img_off[i]
        g0, ng = gt_img_off[i], gt_img_off[i + 1] - gt_img_off[i]
        for j in range(nd):
            d = det_rows[d0 + j]
            dx, dy, dw, dh = det_box[d, 0], det_box[d, 1], det_box[d, 2], det_box[d, 3]
            for q in range(ng):
                g = gt_rows[g0 + q]
                gx, gy, gw, gh = gt_box[g, 0], gt_box[g, 1], gt_box[g, 2], gt_box[g, 3]
                w = min(dw + dx, gw + gx) - max(dx, gx)
                h = min(dh + dy, gh + gy) - max(dy, gy)
                if w > 0 and h > 0:
                    inter = w * h
                    out[block_off[i] + j * ng + q] = inter / (dw * dh + gw * gh - inter)
    return out


@kernel
def classify(block, block_off, det_by_img, det_img_off, det_cls, status, gt_rows, gt_img_off, gt_cls, gt_used,
             iou_thrs, bg_thr):
    """TIDE's type of each false positive at each threshold t (the
    foreground threshold), tested in TIDE's order:
      no GT in the image                                  -> BKG
      bg <= best IoU with a GT of its class <= t          -> LOC (target: that GT)
      best IoU with a GT of another class >= t            -> CLS (target: that GT)
      best IoU with a GT of its class matched at t >= t   -> DUPE
      best IoU with any GT <= bg                          -> BKG
      otherwise                                           -> BOTH
    Crowd GT are not listed (TIDE's ignore regions). Returns (type [T, S]
    int8, NONE where not a false positive; target GT row [T, S], -1 if none)."""
    n_thr, n_sel = status.shape
    err = np.zeros((n_thr, n_sel), dtype=np.int8)
    target = -np.ones((n_thr, n_sel), dtype=np.int64)
    for i in range(det_img_off.shape[0] - 1):
        d0, nd = det_img_off[i], det_img_off[i + 1] - det_img_off[i]
        g0, ng = gt_img_off[i], gt_img_off[i + 1] - gt_img_off[i]
        for j in range(nd):
            s = det_by_img[d0 + j]
            base = block_off[i] + j * ng
            same, same_g, other, other_g = 0.0, -1, 0.0, -1
            for q in range(ng):  # the first best, as numpy's argmax in TIDE
                v, g = block[base + q], gt_rows[g0 + q]
                if gt_cls[g] == det_cls[s]:
                    if same_g < 0 or v > same:
                        same, same_g = v, g
                elif other_g < 0 or v > other:
                    other, other_g = v, g
            for t in range(n_thr):
                if status[t, s] != FP:
                    continue
                thr = iou_thrs[t]
                if ng == 0:
                    err[t, s] = BKG
                elif same_g >= 0 and bg_thr <= same <= thr:
                    err[t, s], target[t, s] = LOC, same_g
                elif other_g >= 0 and other >= thr:
                    err[t, s], target[t, s] = CLS, other_g
                elif _best_used(block, base, gt_rows, g0, ng, gt_cls, det_cls[s], gt_used[t]) >= thr:
                    err[t, s] = DUPE
                elif max(same, other) <= bg_thr:
                    err[t, s] = BKG
                else:
                    err[t, s] = BOTH
    return err, target


@kernel
def _best_used(block, base, gt_rows, g0, ng, gt_cls, cls, used):
    best = 0.0
    for q in range(ng):
        g = gt_rows[g0 + q]
        if used[g] and gt_cls[g] == cls and block[base + q] > best:
            best = block[base + q]
    return best


@kernel
def fixed_gt(order, err, target, gt_used):
    """For one threshold: the detection whose fix would claim each GT (the
    highest-scoring CLS or LOC error aimed at it while it is unmatched: TIDE's
    BestGTMatch), -1 where none aims at it. A GT with none that stays
    unmatched is a missed one (TIDE's "usable" flag is best >= 0)."""
    best = -np.ones(gt_used.shape[0], dtype=np.int64)
    for n in range(order.shape[0]):  # by decreasing score: the first error aimed at a GT wins it
        s = order[n]
        if err[s] == CLS or err[s] == LOC:
            g = target[s]
            if not gt_used[g] and best[g] < 0:
                best[g] = s
    return best


@kernel
def fixed_aps(order, det_cls, status, err, target, best, gt_cls, gt_counted, gt_used, n_pos, n_cls, rec_thrs):
    """COCO's AP at one threshold (mean over categories with GT, 101 recall
    points, as accumulate computes it) with each kind of error fixed, TIDE's
    way; in MODES order:
      cls/loc: the error that claims its GT (see fixed_gt) becomes a true
               positive (of the GT's category); other errors of the type go;
      both/dupe/bkg: those false positives are removed;
      miss: missed GT (unmatched, claimed by no cls/loc error) are removed;
      FP: every false positive ranks below every true positive (= removed);
      FN: every unmatched GT is removed (perfect recall).
    order: selected positions by decreasing score (stable); gt_counted: GT
    that count as positives (not crowd, not outside the area range).
    Returns float64 [9]."""
    missed = np.zeros(n_cls, dtype=np.int64)
    for g in range(gt_cls.shape[0]):
        if gt_counted[g] and not gt_used[g] and best[g] < 0:
            missed[gt_cls[g]] += 1
    tp_count = np.zeros(n_cls, dtype=np.int64)
    for s in range(status.shape[0]):
        if status[s] == TP:
            tp_count[det_cls[s]] += 1
    out = np.zeros(N_MODES)
    n_sel = order.shape[0]
    eff_cls = np.empty(n_sel, dtype=np.int64)
    eff_tp = np.empty(n_sel, dtype=np.uint8)
    # In score order once, so that the passes below read memory in sequence.
    cls_o, status_o, err_o = det_cls[order], status[order], err[order]
    claims = np.zeros(n_sel, dtype=np.int64)  # the category a cls/loc fix moves the detection to, -1: none
    for n in range(n_sel):
        s = order[n]
        g = target[s]
        claims[n] = gt_cls[g] if (err_o[n] == CLS or err_o[n] == LOC) and best[g] == s else -1
    for mode in range(N_MODES):
        npos = n_pos.copy()
        if mode == MISS:
            npos -= missed
        elif mode == FN_MODE:
            npos = tp_count.copy()
        for n in range(n_sel):
            eff_cls[n], eff_tp[n] = _outcome(status_o[n], err_o[n], cls_o[n], claims[n], mode)
        out[mode] = _mean_ap(eff_cls, eff_tp, npos, n_pos, n_cls, rec_thrs)
    return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _outcome(status, err, cls, claim, mode):
    """(category, 1 if a true positive) of a detection with `mode` fixed;
    category -1: not counted (ignored or removed). claim: its category as a
    fixed cls/loc error, -1 if its fix claims no GT."""
    if status == IGNORED:
        return -1, 0
    if status == TP:
        return cls, 1
    if mode == FP_MODE:  # all false positives go
        return -1, 0
    if mode == 0 or err != mode:
        return cls, 0
    if claim >= 0:  # err is CLS or LOC
        return claim, 1
    return -1, 0


@kernel
def group_by_class(eff_cls, n_cls):
    """CSR of the counted entries (eff_cls >= 0) by category, keeping their
    order: (offsets [K + 1], entry indices)."""
    counts = np.zeros(n_cls + 1, dtype=np.int64)
    for n in range(eff_cls.shape[0]):
        if eff_cls[n] >= 0:
            counts[eff_cls[n] + 1] += 1
    off = np.cumsum(counts)
    items = np.empty(off[-1], dtype=np.int64)
    cursor = off[:-1].copy()
    for n in range(eff_cls.shape[0]):
        k = eff_cls[n]
        if k >= 0:
            items[cursor[k]] = n
            cursor[k] += 1
    return off, items


@kernel
def _mean_ap(eff_cls, eff_tp, npos, n_pos_base, n_cls, rec_thrs):
    """Mean over categories of COCO's interpolated AP of the counted
    detections (already in score order). A category counts if it had GT
    before fixing; one left with no GT counts as 0 if it still has
    detections and not at all otherwise (TIDE's rule)."""
    off, items = group_by_class(eff_cls, n_cls)
    total, classes = 0.0, 0
    for k in range(n_cls):
        if n_pos_base[k] == 0:
            continue
        if npos[k] == 0:
            if off[k + 1] > off[k]:
                classes += 1
            continue
        total += interpolated_ap(eff_tp[items[off[k]:off[k + 1]]], npos[k], rec_thrs)
        classes += 1
    return total / classes if classes else -1.0


@kernel
def interpolated_ap(flags, npig, rec_thrs):
    """accumulate's AP of one category: precision tp / (tp + fp + eps),
    made monotone, read at each recall threshold (searchsorted, left), 0
    beyond the last recall; the mean of the R values."""
    total = flags.shape[0]
    eps = np.spacing(1.0)
    rc = np.empty(total)
    pr = np.empty(total)
    tp, fp = 0, 0
    for j in range(total):
        if flags[j]:
            tp += 1
        else:
            fp += 1
        rc[j] = tp / npig
        pr[j] = tp / (float(fp) + float(tp) + eps)
    for j in range(total - 1, 0, -1):
        if pr[j] > pr[j - 1]:
            pr[j - 1] = pr[j]
    q = np.searchsorted(rc, rec_thrs)
    s = 0.0
    for r in range(rec_thrs.shape[0]):
        if q[r] >= total:
            break
        s += pr[q[r]]
    return s / rec_thrs.shape[0]


@kernel
def f1_points(order, det_cls, status, scores, n_pos, n_cls):
    """Per category, the score threshold (keep score >= it) that maximises F1
    at one IoU threshold, with the precision, recall and F1 there; NaN where
    the category has no true positive. A threshold cannot split a run of
    equal scores, so only the ends of runs are candidates; a tie in F1 keeps
    the higher threshold. Returns [K, 4]: threshold, precision, recall, F1."""
    out = np.full((n_cls, 4), np.nan)
    eff_cls = np.empty(order.shape[0], dtype=np.int64)
    for n in range(order.shape[0]):
        eff_cls[n] = -1 if status[order[n]] == IGNORED else det_cls[order[n]]
    off, items = group_by_class(eff_cls, n_cls)
    for k in range(n_cls):
        if n_pos[k] == 0:
            continue
        tp = 0
        for j in range(off[k], off[k + 1]):
            s = order[items[j]]
            tp += status[s] == TP
            if j + 1 < off[k + 1] and scores[order[items[j + 1]]] == scores[s]:
                continue
            if tp == 0:
                continue
            precision, recall = tp / (j + 1 - off[k]), tp / n_pos[k]
            f1 = 2 * precision * recall / (precision + recall)
            if not f1 <= out[k, 3]:  # NaN (none yet) or better
                out[k, 0], out[k, 1], out[k, 2], out[k, 3] = scores[s], precision, recall, f1
    return out


@kernel
def confusion(block, block_off, det_img_off, det_cls, gt_rows, gt_img_off, gt_cls, n_cls, iou_thr):
    """supervision's ConfusionMatrix rule on each image: candidate pairs with
    IoU > iou_thr, visited same-class first, then by decreasing IoU (ties:
    GT order, then detection order); each GT and detection matched once.
    Rows: true category, K = background; columns: predicted, K = missed.
    Detections are those listed per image (already above the score
    threshold); unmatched ones are returned as a mask for the caller."""
    counts = np.zeros((n_cls + 1, n_cls + 1), dtype=np.int64)
    unmatched = np.ones(det_img_off[-1], dtype=np.bool_)
    for i in range(det_img_off.shape[0] - 1):
        d0, nd = det_img_off[i], det_img_off[i + 1] - det_img_off[i]
        g0, ng = gt_img_off[i], gt_img_off[i + 1] - gt_img_off[i]
        gt_free = np.ones(ng, dtype=np.bool_)
        if nd and ng:
            base = block_off[i]
            pairs = np.empty((nd * ng, 3))  # key: class mismatch, -IoU, position (g-major)
            n = 0
            for q in range(ng):
                for j in range(nd):
                    v = block[base + j * ng + q]
                    if v > iou_thr:
                        pairs[n, 0] = 0.0 if det_cls[d0 + j] == gt_cls[gt_rows[g0 + q]] else 1.0
                        pairs[n, 1] = -v
                        pairs[n, 2] = q * nd + j
                        n += 1
            for m in _lexsorted(pairs[:n]):
                q, j = int(pairs[m, 2]) // nd, int(pairs[m, 2]) % nd
                if gt_free[q] and unmatched[d0 + j]:
                    counts[gt_cls[gt_rows[g0 + q]], det_cls[d0 + j]] += 1
                    gt_free[q] = False
                    unmatched[d0 + j] = False
        for q in range(ng):
            if gt_free[q]:
                counts[gt_cls[gt_rows[g0 + q]], n_cls] += 1
    return counts, unmatched


@kernel
def _lexsorted(pairs):
    """Row order by (column 0, column 1, column 2), stable."""
    order = np.argsort(pairs[:, 2], kind="mergesort")
    order = order[np.argsort(pairs[order, 1], kind="mergesort")]
    return order[np.argsort(pairs[order, 0], kind="mergesort")]
