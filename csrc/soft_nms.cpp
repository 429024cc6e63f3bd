// Soft-NMS (Bodla et al., ICCV 2017): instead of discarding the boxes that
// overlap a selected box, decay their scores by a function of the IoU:
//   linear:   s *= (1 - iou) when iou > iou_threshold
//   gaussian: s *= exp(-iou^2 / sigma)
// and drop a box once its score falls below score_threshold. Scores are
// decayed in float64 so the result does not depend on float32 rounding.
#include <cmath>

#include "common.h"
#include "kernels.h"

namespace detkit {

namespace {

template <typename T>
py::tuple soft_nms(carray<T> boxes, carray<T> scores, double iou_threshold, double sigma, double score_threshold,
                   bool gaussian) {
  const int64_t n = boxes.shape(0);
  const T* bp = boxes.data();
  const T* sp = scores.data();
  std::vector<int64_t> keep;
  std::vector<double> kept_scores;
  {
    py::gil_scoped_release release;
    // Live boxes (those above the threshold), compacted as they are selected
    // or dropped; `index` maps back to the input rows.
    BoxesSoA<T> live;
    std::vector<int64_t> index;
    std::vector<double> score;
    live.resize(n);
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!(static_cast<double>(sp[i]) >= score_threshold)) continue;
      live.set(count++, bp + 4 * i);
      index.push_back(i);
      score.push_back(sp[i]);
    }
    auto best_of = [&](int64_t count) {  // highest score, lowest index on ties
      int64_t best = 0;
      for (int64_t j = 1; j < count; ++j)
        if (score[j] > score[best] || (score[j] == score[best] && index[j] < index[best])) best = j;
      return best;
    };
    int64_t best = count > 0 ? best_of(count) : -1;
    while (count > 0) {
      keep.push_back(index[best]);
      kept_scores.push_back(score[best]);
      const T ix1 = live.x1[best], iy1 = live.y1[best], ix2 = live.x2[best], iy2 = live.y2[best];
      const T ia = live.area[best];
      // Remove the selected box by moving the last live box into its slot.
      const int64_t last = count - 1;
      live.x1[best] = live.x1[last]; live.y1[best] = live.y1[last]; live.x2[best] = live.x2[last];
      live.y2[best] = live.y2[last]; live.area[best] = live.area[last];
      index[best] = index[last]; score[best] = score[last];
      count = last;
      // Decay, drop, and find the next best in one pass over the survivors.
      int64_t w = 0;
      best = -1;
      for (int64_t j = 0; j < count; ++j) {
        const double iou = iou_pair(ix1, iy1, ix2, iy2, ia, live.x1[j], live.y1[j], live.x2[j], live.y2[j],
                                    live.area[j]);
        double s = score[j];
        if (gaussian)
          s *= std::exp(-(iou * iou) / sigma);
        else if (iou > iou_threshold)
          s *= 1.0 - iou;
        if (!(s >= score_threshold)) continue;
        live.x1[w] = live.x1[j]; live.y1[w] = live.y1[j]; live.x2[w] = live.x2[j]; live.y2[w] = live.y2[j];
        live.area[w] = live.area[j]; index[w] = index[j]; score[w] = s;
        if (best < 0 || s > score[best] || (s == score[best] && index[w] < index[best])) best = w;
        ++w;
      }
      count = w;
    }
  }
  py::array_t<int64_t> keep_out(static_cast<py::ssize_t>(keep.size()));
  py::array_t<T> score_out(static_cast<py::ssize_t>(kept_scores.size()));
  std::copy(keep.begin(), keep.end(), keep_out.mutable_data());
  for (size_t k = 0; k < kept_scores.size(); ++k) score_out.mutable_data()[k] = static_cast<T>(kept_scores[k]);
  return py::make_tuple(keep_out, score_out);
}

}  // namespace

void register_soft_nms(py::module_& m) {
  m.def("soft_nms", &soft_nms<float>, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("sigma"), py::arg("score_threshold"), py::arg("gaussian"));
  m.def("soft_nms", &soft_nms<double>, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("sigma"), py::arg("score_threshold"), py::arg("gaussian"));
}

}  // namespace detkit
