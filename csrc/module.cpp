// detkit._C: compiled CPU kernels for detkit.ops, on numpy buffers (no torch headers).
#include <cmath>

#include "kernels.h"

namespace detkit {

namespace {

// First row of an [N, 4] box array that is not finite (reason 1) or, for
// xyxy boxes, has x2 < x1 or y2 < y1, or for wh formats a negative width or
// height (reason 2). Returns (-1, 0) when every row is valid.
template <typename T>
py::tuple first_invalid_box(carray<T> boxes, bool corners) {
  const int64_t n = boxes.shape(0);
  const T* b = boxes.data();
  for (int64_t i = 0; i < n; ++i) {
    const T* r = b + 4 * i;
    if (!(std::isfinite(r[0]) && std::isfinite(r[1]) && std::isfinite(r[2]) && std::isfinite(r[3])))
      return py::make_tuple(i, 1);
    const bool ordered = corners ? (r[2] >= r[0] && r[3] >= r[1]) : (r[2] >= T(0) && r[3] >= T(0));
    if (!ordered) return py::make_tuple(i, 2);
  }
  return py::make_tuple(int64_t(-1), 0);
}

// Index of the first non-finite value of a flat array, or -1.
template <typename T>
int64_t first_nonfinite(carray<T> values) {
  const int64_t n = values.size();
  const T* v = values.data();
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return i;
  return -1;
}

}  // namespace

void register_validate(py::module_& m) {
  m.def("first_invalid_box", &first_invalid_box<float>, py::arg("boxes"), py::arg("corners"));
  m.def("first_invalid_box", &first_invalid_box<double>, py::arg("boxes"), py::arg("corners"));
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
}
