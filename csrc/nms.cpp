// Greedy non-maximum suppression with exactly torchvision's rule (a box is
// dropped when its IoU with a kept, higher-scoring box is > iou_threshold),
// made fast two ways:
//  * small groups: a flat quadratic pass over struct-of-arrays boxes whose
//    inner loop the compiler vectorises;
//  * large groups: a levelled grid. Boxes are binned by size (one level per
//    factor of two of their longer side) and, within a level, by centre into
//    cells as large as the level's largest box. A kept box only visits, on
//    each level, the cells whose boxes could overlap it. IoU > t >= 0 needs a
//    positive-area overlap, so the result equals the full scan's.
#include <cmath>

#include "common.h"
#include "kernels.h"

namespace detkit {

namespace {

constexpr int64_t kGridMinBoxes = 256;  // below this the flat pass wins
constexpr int kMaxLevels = 24;

// Greedy NMS over boxes in score order; returns kept ranks ascending.
template <typename T>
std::vector<int64_t> nms_flat(const BoxesSoA<T>& b, double thr) {
  // A mask lane as wide as T, so the compare-and-or loop vectorises.
  using Mask = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  const int64_t n = static_cast<int64_t>(b.x1.size());
  const T t = threshold_as<T>(thr);
  std::vector<Mask> suppressed(n, 0);
  std::vector<int64_t> keep;
  const T* x1 = b.x1.data(); const T* y1 = b.y1.data(); const T* x2 = b.x2.data(); const T* y2 = b.y2.data();
  const T* area = b.area.data();
  Mask* sup = suppressed.data();
  for (int64_t i = 0; i < n; ++i) {
    if (sup[i]) continue;
    keep.push_back(i);
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = area[i];
    for (int64_t j = i + 1; j < n; ++j) {
      const T iou = iou_pair(ix1, iy1, ix2, iy2, ia, x1[j], y1[j], x2[j], y2[j], area[j]);
      sup[j] |= static_cast<Mask>(iou > t);
    }
  }
  return keep;
}

template <typename T>
struct Entry {
  T x1, y1, x2, y2, area;
  int32_t rank;  // the Python layer rejects N >= 2^31
};

// One size level of the grid: boxes of similar size, binned by centre.
struct Level {
  double x0 = 0, y0 = 0, cell = 1, max_w = 0, max_h = 0;
  double cx_lo = HUGE_VAL, cx_hi = -HUGE_VAL, cy_lo = HUGE_VAL, cy_hi = -HUGE_VAL;
  int64_t gx = 1, gy = 1, count = 0, live = 0, base = 0;  // base: first cell id

  void finalize() {
    x0 = cx_lo; y0 = cy_lo;
    // Half the largest box: finer cells trim the slack around each query.
    cell = std::max(0.5 * std::max(max_w, max_h), 1e-12);
    const double ex = cx_hi - cx_lo, ey = cy_hi - cy_lo;
    gx = static_cast<int64_t>(std::min(ex / cell, 4096.0)) + 1;
    gy = static_cast<int64_t>(std::min(ey / cell, 4096.0)) + 1;
    // A few cells per box at most: emptier cells only cost visits.
    while (gx * gy > 2 * count + 1) {
      cell *= 2;
      gx = static_cast<int64_t>(ex / cell) + 1;
      gy = static_cast<int64_t>(ey / cell) + 1;
    }
  }
  // floor((v - origin) / cell), clamped: monotone in v, so all centres in
  // [lo, hi] fall in the cells col(lo)..col(hi).
  int64_t col(double x) const { return std::min(gx - 1, std::max<int64_t>(0, static_cast<int64_t>(std::floor((x - x0) / cell)))); }
  int64_t row(double y) const { return std::min(gy - 1, std::max<int64_t>(0, static_cast<int64_t>(std::floor((y - y0) / cell)))); }
};

template <typename T>
std::vector<int64_t> nms_grid(const BoxesSoA<T>& b, double thr) {
  const int64_t n = static_cast<int64_t>(b.x1.size());
  // Size levels: floor(log2(side / smallest side)).
  double smallest = HUGE_VAL;
  for (int64_t i = 0; i < n; ++i) {
    const double s = std::max(double(b.x2[i]) - b.x1[i], double(b.y2[i]) - b.y1[i]);
    if (s > 0) smallest = std::min(smallest, s);
  }
  if (!(smallest < HUGE_VAL)) smallest = 1;
  std::vector<int> level_of(n);
  std::vector<Level> levels(kMaxLevels);
  for (int64_t i = 0; i < n; ++i) {
    const double w = double(b.x2[i]) - b.x1[i], h = double(b.y2[i]) - b.y1[i];
    const double s = std::max(w, h);
    const int l = s > smallest ? std::min(kMaxLevels - 1, static_cast<int>(std::log2(s / smallest))) : 0;
    level_of[i] = l;
    Level& L = levels[l];
    const double cx = 0.5 * (double(b.x1[i]) + b.x2[i]), cy = 0.5 * (double(b.y1[i]) + b.y2[i]);
    L.max_w = std::max(L.max_w, w); L.max_h = std::max(L.max_h, h);
    L.cx_lo = std::min(L.cx_lo, cx); L.cx_hi = std::max(L.cx_hi, cx);
    L.cy_lo = std::min(L.cy_lo, cy); L.cy_hi = std::max(L.cy_hi, cy);
    ++L.count;
  }
  int64_t ncells = 0;
  for (Level& L : levels) {
    if (L.count == 0) continue;
    L.finalize();
    L.base = ncells;
    L.live = L.count;
    ncells += L.gx * L.gy;
  }
  // Counting sort of the boxes into cells; rank order is kept within a cell.
  std::vector<int64_t> cell_of(n), begin(ncells + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const Level& L = levels[level_of[i]];
    const double cx = 0.5 * (double(b.x1[i]) + b.x2[i]), cy = 0.5 * (double(b.y1[i]) + b.y2[i]);
    cell_of[i] = L.base + L.row(cy) * L.gx + L.col(cx);
    ++begin[cell_of[i] + 1];
  }
  for (int64_t c = 0; c < ncells; ++c) begin[c + 1] += begin[c];
  std::vector<int64_t> end(begin.begin(), begin.end() - 1);
  std::vector<Entry<T>> entries(n);
  for (int64_t i = 0; i < n; ++i)
    entries[end[cell_of[i]]++] = Entry<T>{b.x1[i], b.y1[i], b.x2[i], b.y2[i], b.area[i], static_cast<int32_t>(i)};

  const T t = threshold_as<T>(thr);
  std::vector<unsigned char> suppressed(n, 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(i);
    --levels[level_of[i]].live;
    const T ix1 = b.x1[i], iy1 = b.y1[i], ix2 = b.x2[i], iy2 = b.y2[i], ia = b.area[i];
    for (Level& L : levels) {
      if (L.live == 0) continue;
      // Centres of boxes that can overlap box i, widened by a rounding margin.
      const double mx = 0.5 * L.max_w, my = 0.5 * L.max_h;
      const double eps = 1e-9 * (std::fabs(double(ix1)) + std::fabs(double(iy1)) + std::fabs(double(ix2)) +
                                 std::fabs(double(iy2)) + mx + my + 1.0);
      const double lo_x = ix1 - mx - eps, hi_x = ix2 + mx + eps;
      const double lo_y = iy1 - my - eps, hi_y = iy2 + my + eps;
      if (hi_x < L.cx_lo || lo_x > L.cx_hi || hi_y < L.cy_lo || lo_y > L.cy_hi) continue;
      const int64_t c0 = L.col(lo_x), c1 = L.col(hi_x), r0 = L.row(lo_y), r1 = L.row(hi_y);
      for (int64_t r = r0; r <= r1; ++r) {
        for (int64_t c = c0; c <= c1; ++c) {
          const int64_t cell = L.base + r * L.gx + c;
          // Visit the cell, dropping entries that are done (rank <= i) or
          // suppressed so that later visits skip them.
          Entry<T>* out = &entries[begin[cell]];
          for (Entry<T>* e = out, *last = &entries[0] + end[cell]; e != last; ++e) {
            if (e->rank <= i || suppressed[e->rank]) continue;
            // Most visited boxes miss box i: skip the division for them.
            if (std::min(ix2, e->x2) <= std::max(ix1, e->x1) || std::min(iy2, e->y2) <= std::max(iy1, e->y1)) {
              *out++ = *e;
              continue;
            }
            const T iou = iou_pair(ix1, iy1, ix2, iy2, ia, e->x1, e->y1, e->x2, e->y2, e->area);
            if (iou > t) {
              suppressed[e->rank] = 1;
              --L.live;
              continue;
            }
            *out++ = *e;
          }
          end[cell] = out - entries.data();
        }
      }
    }
  }
  return keep;
}

// Greedy NMS of the boxes `members` (indices into `boxes`, in score order);
// returns the kept members' positions in `members`.
template <typename T>
std::vector<int64_t> nms_ordered(const T* boxes, const int64_t* members, int64_t n, double thr) {
  BoxesSoA<T> b;
  b.resize(n);
  for (int64_t k = 0; k < n; ++k) b.set(k, boxes + 4 * members[k]);
  return n >= kGridMinBoxes ? nms_grid(b, thr) : nms_flat(b, thr);
}

py::array_t<int64_t> to_array(const std::vector<int64_t>& v) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

template <typename T>
py::array_t<int64_t> nms(carray<T> boxes, carray<T> scores, double iou_threshold) {
  const int64_t n = boxes.shape(0);
  const T* bp = boxes.data();
  const T* sp = scores.data();
  std::vector<int64_t> keep;
  {
    py::gil_scoped_release release;
    const std::vector<int64_t> order = descending_order(sp, n);
    const std::vector<int64_t> ranks = nms_ordered(bp, order.data(), n, iou_threshold);
    keep.reserve(ranks.size());
    for (int64_t r : ranks) keep.push_back(order[r]);
  }
  return to_array(keep);
}

// NMS within each category: boxes are grouped by category (each group in
// score order), suppressed per group, and the survivors merged by score.
template <typename T>
py::array_t<int64_t> batched_nms(carray<T> boxes, carray<T> scores, py::array_t<int64_t, py::array::c_style> idxs,
                                 double iou_threshold) {
  const int64_t n = boxes.shape(0);
  const T* bp = boxes.data();
  const T* sp = scores.data();
  const int64_t* cp = idxs.data();
  std::vector<int64_t> keep;
  {
    py::gil_scoped_release release;
    const std::vector<int64_t> order = descending_order(sp, n);
    // Stable grouping by category keeps score order inside each group.
    std::vector<int64_t> grouped(order);
    std::stable_sort(grouped.begin(), grouped.end(), [cp](int64_t a, int64_t b) { return cp[a] < cp[b]; });
    std::vector<int64_t> rank_of(n);
    for (int64_t r = 0; r < n; ++r) rank_of[order[r]] = r;
    std::vector<int64_t> kept_ranks;
    for (int64_t lo = 0; lo < n;) {
      int64_t hi = lo + 1;
      while (hi < n && cp[grouped[hi]] == cp[grouped[lo]]) ++hi;
      for (int64_t k : nms_ordered(bp, grouped.data() + lo, hi - lo, iou_threshold))
        kept_ranks.push_back(rank_of[grouped[lo + k]]);
      lo = hi;
    }
    std::sort(kept_ranks.begin(), kept_ranks.end());
    keep.reserve(kept_ranks.size());
    for (int64_t r : kept_ranks) keep.push_back(order[r]);
  }
  return to_array(keep);
}

}  // namespace

void register_nms(py::module_& m) {
  m.def("nms", &nms<float>, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"));
  m.def("nms", &nms<double>, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"));
  m.def("batched_nms", &batched_nms<float>, py::arg("boxes"), py::arg("scores"), py::arg("idxs"),
        py::arg("iou_threshold"));
  m.def("batched_nms", &batched_nms<double>, py::arg("boxes"), py::arg("scores"), py::arg("idxs"),
        py::arg("iou_threshold"));
}

}  // namespace detkit
