"""Numba kernel behind detkit.ops.d2l: the book's greedy anchor assignment.

The torch reference (d2l._assign_reference) runs G full argmax passes over
the [A, G] IoU matrix plus a handful of small tensor ops each; this does one
pass for the threshold step and keeps, per ground-truth column, its best live
anchor, rescanning a column only when its best anchor is taken. The choices
are the reference's: its flat argmax picks the first maximum in row-major
order, i.e. the lowest anchor, then the lowest ground truth, which is what
comparing (value, best anchor, column) here picks.
"""
import numpy as np
from numba import njit

kernel = njit(cache=True, nogil=True, error_model="numpy")


@kernel
def _column_best(iou, column, row_alive):
    """(first live row with the column's largest IoU, that IoU)."""
    best, value = -1, iou.dtype.type(-1)
    for a in range(iou.shape[0]):
        if row_alive[a] and (best < 0 or iou[a, column] > value):
            best, value = a, iou[a, column]
    return best, value


@kernel
def greedy_assign(iou, threshold):
    """iou: [A, G] (A, G >= 1), values in [0, 1]; threshold: iou's dtype.

    Returns int64 [A]: each anchor's ground truth, -1 for none.
    """
    num_anchors, num_gt = iou.shape
    out = np.full(num_anchors, -1, dtype=np.int64)
    # Each column's first best anchor, gathered in the same row-major pass as step 1 (one read of the matrix).
    col_row = np.zeros(num_gt, dtype=np.int64)
    col_value = np.empty(num_gt, dtype=iou.dtype)
    col_value[:] = iou[0]
    for a in range(num_anchors):  # step 1: best ground truth at or above the threshold
        best = 0
        for g in range(num_gt):
            if iou[a, g] > iou[a, best]:
                best = g
            if iou[a, g] > col_value[g]:
                col_row[g], col_value[g] = a, iou[a, g]
        if iou[a, best] >= threshold:
            out[a] = best
    row_alive = np.ones(num_anchors, dtype=np.bool_)
    col_alive = np.ones(num_gt, dtype=np.bool_)
    rows_left = num_anchors
    for _ in range(num_gt):  # step 2: G times the largest entry left
        if rows_left == 0:  # the reference's argmax of an all -1 matrix: entry (0, 0)
            out[0] = 0
            continue
        pick = -1
        for g in range(num_gt):
            if not col_alive[g]:
                continue
            if pick < 0 or col_value[g] > col_value[pick] or (
                    col_value[g] == col_value[pick] and col_row[g] < col_row[pick]):
                pick = g
        anchor = col_row[pick]
        out[anchor] = pick
        col_alive[pick] = False
        row_alive[anchor] = False
        rows_left -= 1
        for g in range(num_gt):
            if col_alive[g] and col_row[g] == anchor:
                col_row[g], col_value[g] = _column_best(iou, g, row_alive)
    return out
