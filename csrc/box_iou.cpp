// Pairwise IoU and generalized IoU: Tensor[N, 4] x Tensor[M, 4] -> Tensor[N, M].
#include "common.h"
#include "kernels.h"

namespace detkit {

namespace {

template <typename T>
inline void giou_row_impl(T ax1, T ay1, T ax2, T ay2, T aarea, const BoxesSoA<T>& b, int64_t m, T* row) {
  for (int64_t j = 0; j < m; ++j) {
    const T iou = iou_pair(ax1, ay1, ax2, ay2, aarea, b.x1[j], b.y1[j], b.x2[j], b.y2[j], b.area[j]);
    T w = std::min(ax2, b.x2[j]) - std::max(ax1, b.x1[j]);
    T h = std::min(ay2, b.y2[j]) - std::max(ay1, b.y1[j]);
    w = w > T(0) ? w : T(0);
    h = h > T(0) ? h : T(0);
    const T uni = aarea + b.area[j] - w * h;
    // Enclosing box; torchvision: iou - (enclosing - union) / enclosing.
    T ew = std::max(ax2, b.x2[j]) - std::min(ax1, b.x1[j]);
    T eh = std::max(ay2, b.y2[j]) - std::min(ay1, b.y1[j]);
    ew = ew > T(0) ? ew : T(0);
    eh = eh > T(0) ? eh : T(0);
    const T enclosing = ew * eh;
    row[j] = iou - (enclosing - uni) / (enclosing > T(0) ? enclosing : T(1));
  }
}
DETKIT_MULTIVERSION void giou_row(float ax1, float ay1, float ax2, float ay2, float aarea, const BoxesSoA<float>& b,
                                  int64_t m, float* row) {
  giou_row_impl(ax1, ay1, ax2, ay2, aarea, b, m, row);
}
DETKIT_MULTIVERSION void giou_row(double ax1, double ay1, double ax2, double ay2, double aarea,
                                  const BoxesSoA<double>& b, int64_t m, double* row) {
  giou_row_impl(ax1, ay1, ax2, ay2, aarea, b, m, row);
}

template <typename T, bool Generalized>
void iou_rows(const T* a, const BoxesSoA<T>& b, int64_t m, int64_t row_begin, int64_t row_end, T* out) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
    const T aarea = (ax2 - ax1) * (ay2 - ay1);
    if constexpr (Generalized)
      giou_row(ax1, ay1, ax2, ay2, aarea, b, m, out + i * m);
    else
      iou_row(ax1, ay1, ax2, ay2, aarea, b.x1.data(), b.y1.data(), b.x2.data(), b.y2.data(), b.area.data(), m,
              out + i * m);
  }
}

template <typename T, bool Generalized>
py::array_t<T> pairwise(carray<T> boxes1, carray<T> boxes2, int threads) {
  const int64_t n = boxes1.shape(0), m = boxes2.shape(0);
  py::array_t<T> out({n, m});
  const T* a = boxes1.data();
  const T* bb = boxes2.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    BoxesSoA<T> b;
    b.resize(m);
    for (int64_t j = 0; j < m; ++j) b.set(j, bb + 4 * j);
    // Threads only pay for themselves on large outputs (spawn cost ~20 us).
    const int use = n * m >= (int64_t(1) << 18) ? threads : 1;
    parallel_for(n, use, [&](int64_t lo, int64_t hi) { iou_rows<T, Generalized>(a, b, m, lo, hi, o); });
  }
  return out;
}

}  // namespace

void register_box_iou(py::module_& m) {
  m.def("box_iou", &pairwise<float, false>, py::arg("boxes1"), py::arg("boxes2"), py::arg("threads") = 1);
  m.def("box_iou", &pairwise<double, false>, py::arg("boxes1"), py::arg("boxes2"), py::arg("threads") = 1);
  m.def("generalized_box_iou", &pairwise<float, true>, py::arg("boxes1"), py::arg("boxes2"),
        py::arg("threads") = 1);
  m.def("generalized_box_iou", &pairwise<double, true>, py::arg("boxes1"), py::arg("boxes2"),
        py::arg("threads") = 1);
}

}  // namespace detkit
