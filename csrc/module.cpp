// detkit._C: compiled CPU kernels for detkit.ops, on numpy buffers (no torch headers).
#include <cmath>

#include "kernels.h"

namespace detkit {

namespace {

constexpr int64_t kBlock = 512;

// 1 when x is inf or NaN (all exponent bits set). An integer test, so the
// block loops below vectorise as OR-reductions.
inline unsigned nonfinite(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x7f800000u) == 0x7f800000u;
}
inline unsigned nonfinite(double x) {
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}

// Nonzero when any row of [lo, hi) is non-finite or inverted (or, with
// `positive`, has zero width or height).
template <typename T>
unsigned block_invalid(const T* b, int64_t lo, int64_t hi, bool corners, bool positive) {
  unsigned bad = 0;
  for (int64_t k = 4 * lo; k < 4 * hi; ++k) bad |= nonfinite(b[k]);
  if (corners && positive) {
    for (int64_t i = lo; i < hi; ++i) bad |= unsigned(b[4 * i + 2] <= b[4 * i]) | unsigned(b[4 * i + 3] <= b[4 * i + 1]);
  } else if (corners) {
    for (int64_t i = lo; i < hi; ++i) bad |= unsigned(b[4 * i + 2] < b[4 * i]) | unsigned(b[4 * i + 3] < b[4 * i + 1]);
  } else {
    for (int64_t i = lo; i < hi; ++i) bad |= unsigned(b[4 * i + 2] < T(0)) | unsigned(b[4 * i + 3] < T(0));
  }
  return bad;
}

// First row of an [N, 4] box array that is not finite (reason 1) or, for
// xyxy boxes, has x2 < x1 or y2 < y1, or for wh formats a negative width or
// height (reason 2), or with `positive` a zero width or height (reason 3).
// Returns (-1, 0) when every row is valid. Blocks are checked branch-free;
// only a bad block is rescanned to name the row.
template <typename T>
py::tuple first_invalid_box(carray<T> boxes, bool corners, bool positive) {
  const int64_t n = boxes.shape(0);
  const T* b = boxes.data();
  for (int64_t lo = 0; lo < n; lo += kBlock) {
    const int64_t hi = std::min(n, lo + kBlock);
    if (!block_invalid(b, lo, hi, corners, positive)) continue;
    for (int64_t i = lo; i < hi; ++i) {
      const T* r = b + 4 * i;
      if (nonfinite(r[0]) | nonfinite(r[1]) | nonfinite(r[2]) | nonfinite(r[3])) return py::make_tuple(i, 1);
      if (block_invalid(b, i, i + 1, corners, false)) return py::make_tuple(i, 2);
      if (block_invalid(b, i, i + 1, corners, positive)) return py::make_tuple(i, 3);
    }
  }
  return py::make_tuple(int64_t(-1), 0);
}

// Index of the first non-finite value of a flat array, or -1.
template <typename T>
int64_t first_nonfinite(carray<T> values) {
  const int64_t n = values.size();
  const T* v = values.data();
  for (int64_t lo = 0; lo < n; lo += kBlock) {
    const int64_t hi = std::min(n, lo + kBlock);
    unsigned bad = 0;
    for (int64_t i = lo; i < hi; ++i) bad |= nonfinite(v[i]);
    if (!bad) continue;
    for (int64_t i = lo; i < hi; ++i)
      if (nonfinite(v[i])) return i;
  }
  return -1;
}

}  // namespace

void register_validate(py::module_& m) {
  m.def("first_invalid_box", &first_invalid_box<float>, py::arg("boxes"), py::arg("corners"),
        py::arg("positive") = false);
  m.def("first_invalid_box", &first_invalid_box<double>, py::arg("boxes"), py::arg("corners"),
        py::arg("positive") = false);
  m.def("first_nonfinite", &first_nonfinite<float>, py::arg("values"));
  m.def("first_nonfinite", &first_nonfinite<double>, py::arg("values"));
}

}  // namespace detkit

PYBIND11_MODULE(_C, m) {
  m.doc() = "detkit compiled CPU kernels";
  detkit::register_validate(m);
  detkit::register_box_iou(m);
  detkit::register_nms(m);
  detkit::register_soft_nms(m);
  detkit::register_ssd_assign(m);
}
