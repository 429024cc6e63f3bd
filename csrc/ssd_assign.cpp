// SSD target assignment for one image, fused: IoU of every GT with every
// anchor (as box_iou), SSDMatcher (best GT per anchor above the threshold,
// then each GT's best anchor forced to it) and BoxCoder.encode of the
// matched anchors. Returns (box_targets [A, 4], labels [A]); background = 0.
#include <cmath>

#include "common.h"
#include "kernels.h"

namespace detkit {

namespace {

// Integer image of a non-negative float: orders like the value, and integer
// max-reductions vectorise where float ones (without fast-math) do not.
template <typename T>
using BitsOf = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// torchvision's encode_boxes for one (target, anchor) pair.
template <typename T>
void encode_pair(const T* ref, const T* prop, const T* w, T* out) {
  const T half = T(0.5);
  const T ex_w = prop[2] - prop[0], ex_h = prop[3] - prop[1];
  const T ex_cx = prop[0] + half * ex_w, ex_cy = prop[1] + half * ex_h;
  const T gt_w = ref[2] - ref[0], gt_h = ref[3] - ref[1];
  const T gt_cx = ref[0] + half * gt_w, gt_cy = ref[1] + half * gt_h;
  out[0] = w[0] * (gt_cx - ex_cx) / ex_w;
  out[1] = w[1] * (gt_cy - ex_cy) / ex_h;
  out[2] = w[2] * std::log(gt_w / ex_w);
  out[3] = w[3] * std::log(gt_h / ex_h);
}

// Per-anchor best GT so far (strict >: the first GT wins ties, as
// torch.max(dim=0)), and the largest IoU bit pattern of this GT's row.
template <typename T, typename Index, typename Bits>
inline Bits update_best_impl(const T* iou, T* best, Index* match, Index g, int64_t n) {
  Bits top = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Index better = -static_cast<Index>(iou[i] > best[i]);  // all ones or zero: a blend
    match[i] = (g & better) | (match[i] & ~better);
    best[i] = std::max(best[i], iou[i]);
    Bits b;
    std::memcpy(&b, iou + i, sizeof b);
    top = std::max(top, b);
  }
  return top;
}
DETKIT_MULTIVERSION int32_t update_best(const float* iou, float* best, int32_t* match, int32_t g, int64_t n) {
  return update_best_impl<float, int32_t, int32_t>(iou, best, match, g, n);
}
DETKIT_MULTIVERSION int64_t update_best(const double* iou, double* best, int64_t* match, int64_t g, int64_t n) {
  return update_best_impl<double, int64_t, int64_t>(iou, best, match, g, n);
}

// First index whose IoU has bit pattern `top` (which occurs): blocks are
// tested with a vectorised OR before the one holding it is scanned.
template <typename T, typename Bits>
int64_t first_with_bits(const T* iou, Bits top, int64_t n) {
  constexpr int64_t kBlock = 64;
  int64_t lo = 0;
  for (; lo + kBlock <= n; lo += kBlock) {
    unsigned hit = 0;
    for (int64_t i = lo; i < lo + kBlock; ++i) {
      Bits b;
      std::memcpy(&b, iou + i, sizeof b);
      hit |= unsigned(b == top);
    }
    if (hit) break;
  }
  for (int64_t i = lo; i < n; ++i) {
    Bits b;
    std::memcpy(&b, iou + i, sizeof b);
    if (b == top) return i;
  }
  return 0;
}

template <typename T>
py::tuple ssd_assign(carray<T> anchors, carray<T> gt_boxes, py::array_t<int64_t, py::array::c_style> gt_labels,
                     double threshold, std::array<double, 4> weights) {
  using Bits = BitsOf<T>;
  using Index = Bits;  // same lane width as T, so the select loop vectorises
  const int64_t na = anchors.shape(0), ng = gt_boxes.shape(0);
  py::array_t<T> targets_out({na, int64_t(4)});
  py::array_t<int64_t> labels_out(na);
  const T* ap = anchors.data();
  const T* gp = gt_boxes.data();
  const int64_t* lp = gt_labels.data();
  T* tp = targets_out.mutable_data();
  int64_t* op = labels_out.mutable_data();
  {
    py::gil_scoped_release release;
    std::fill(tp, tp + 4 * na, T(0));
    std::fill(op, op + na, int64_t(0));
    if (ng > 0 && na > 0) {
      BoxesSoA<T> a;
      a.resize(na);
      for (int64_t i = 0; i < na; ++i) a.set(i, ap + 4 * i);
      std::vector<T> best(na, T(-1)), iou(na);
      std::vector<Index> match(na, Index(-1));
      std::vector<int64_t> gt_best(ng);
      const T *x1 = a.x1.data(), *y1 = a.y1.data(), *x2 = a.x2.data(), *y2 = a.y2.data(), *area = a.area.data();
      for (int64_t g = 0; g < ng; ++g) {
        const T* gb = gp + 4 * g;
        const T gx1 = gb[0], gy1 = gb[1], gx2 = gb[2], gy2 = gb[3];
        const T garea = (gx2 - gx1) * (gy2 - gy1);
        // box_iou(gt, anchors): union = area_gt + area_anchor - inter. Two
        // vectorised passes (one fused loop does not vectorise).
        iou_row(gx1, gy1, gx2, gy2, garea, x1, y1, x2, y2, area, na, iou.data());
        const Bits top = update_best(iou.data(), best.data(), match.data(), static_cast<Index>(g), na);
        const int64_t first = first_with_bits(iou.data(), top, na);  // the first anchor wins ties
        gt_best[g] = first;
      }
      const T t = static_cast<T>(threshold);  // torch compares in T
      for (int64_t i = 0; i < na; ++i)
        if (best[i] < t) match[i] = -1;
      for (int64_t g = 0; g < ng; ++g) match[gt_best[g]] = static_cast<Index>(g);  // later GTs overwrite
      const T w[4] = {T(weights[0]), T(weights[1]), T(weights[2]), T(weights[3])};
      for (int64_t i = 0; i < na; ++i) {
        const Index m = match[i];
        if (m < 0) continue;
        op[i] = lp[m];
        encode_pair(gp + 4 * m, ap + 4 * i, w, tp + 4 * i);
      }
    }
  }
  return py::make_tuple(targets_out, labels_out);
}

}  // namespace

void register_ssd_assign(py::module_& m) {
  m.def("ssd_assign", &ssd_assign<float>, py::arg("anchors"), py::arg("gt_boxes"), py::arg("gt_labels"),
        py::arg("threshold"), py::arg("weights"));
  m.def("ssd_assign", &ssd_assign<double>, py::arg("anchors"), py::arg("gt_boxes"), py::arg("gt_labels"),
        py::arg("threshold"), py::arg("weights"));
}

}  // namespace detkit
