// Pairwise IoU and generalized IoU: Tensor[N, 4] x Tensor[M, 4] -> Tensor[N, M].
#include "common.h"
#include "kernels.h"

namespace detkit {

namespace {

template <typename T, bool Generalized>
void iou_rows(const T* a, const BoxesSoA<T>& b, int64_t m, int64_t row_begin, int64_t row_end, T* out) {
  const T* bx1 = b.x1.data(); const T* by1 = b.y1.data();
  const T* bx2 = b.x2.data(); const T* by2 = b.y2.data();
  const T* barea = b.area.data();
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
    const T aarea = (ax2 - ax1) * (ay2 - ay1);
    T* row = out + i * m;
    for (int64_t j = 0; j < m; ++j) {
      T w = std::min(ax2, bx2[j]) - std::max(ax1, bx1[j]);
      T h = std::min(ay2, by2[j]) - std::max(ay1, by1[j]);
      w = w > T(0) ? w : T(0);
      h = h > T(0) ? h : T(0);
      const T inter = w * h;
      const T uni = aarea + barea[j] - inter;
      const T iou = inter / (uni > T(0) ? uni : T(1));
      if constexpr (Generalized) {
        // Enclosing box; torchvision: iou - (enclosing - union) / enclosing.
        T ew = std::max(ax2, bx2[j]) - std::min(ax1, bx1[j]);
        T eh = std::max(ay2, by2[j]) - std::min(ay1, by1[j]);
        ew = ew > T(0) ? ew : T(0);
        eh = eh > T(0) ? eh : T(0);
        const T enclosing = ew * eh;
        row[j] = iou - (enclosing - uni) / (enclosing > T(0) ? enclosing : T(1));
      } else {
        row[j] = iou;
      }
    }
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
