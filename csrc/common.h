// Shared helpers for detkit's C++ kernels: numpy array aliases, the IoU
// formula (rounded exactly as torchvision rounds it) and a tiny parallel-for.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace detkit {

// C-contiguous array of T; the Python layer hands over contiguous tensors.
template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// Boxes in struct-of-arrays form: contiguous coordinates let the compiler
// vectorise the IoU loops, and `area` is computed once per box.
template <typename T>
struct BoxesSoA {
  std::vector<T> x1, y1, x2, y2, area;

  void resize(size_t n) {
    x1.resize(n); y1.resize(n); x2.resize(n); y2.resize(n); area.resize(n);
  }
  // Copies row `src` of an [N, 4] buffer into slot `dst`.
  void set(size_t dst, const T* xyxy) {
    x1[dst] = xyxy[0]; y1[dst] = xyxy[1]; x2[dst] = xyxy[2]; y2[dst] = xyxy[3];
    area[dst] = (xyxy[2] - xyxy[0]) * (xyxy[3] - xyxy[1]);
  }
};

// Hot loops are compiled twice, for AVX2 and for baseline x86-64, and the
// loader picks one for the CPU at hand (GCC function multi-versioning), so one
// build is both portable and twice as wide where AVX2 exists. FMA is not
// enabled, so both versions round identically.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DETKIT_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define DETKIT_MULTIVERSION
#endif

// Intersection over union with torchvision's operation order
// (inter / ((area_a + area_b) - inter)), except that a zero intersection
// gives 0 instead of 0/0 = NaN for two zero-area boxes.
template <typename T>
inline T iou_pair(T ax1, T ay1, T ax2, T ay2, T aarea, T bx1, T by1, T bx2, T by2, T barea) {
  T w = std::min(ax2, bx2) - std::max(ax1, bx1);
  T h = std::min(ay2, by2) - std::max(ay1, by1);
  w = w > T(0) ? w : T(0);
  h = h > T(0) ? h : T(0);
  const T inter = w * h;
  const T uni = aarea + barea - inter;
  // uni >= inter > 0 whenever inter > 0; uni == 0 only when inter == 0.
  return inter / (uni > T(0) ? uni : T(1));
}

// The largest T that is <= thr: for any T value x, (double)x > thr exactly
// when x > threshold_as<T>(thr), so hot loops can compare in T.
template <typename T>
inline T threshold_as(double thr) {
  T t = static_cast<T>(thr);
  if (static_cast<double>(t) > thr) t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}

// out[i] = IoU of box g with box i of the struct-of-arrays (x1..area), i < n.
template <typename T>
inline void iou_row_impl(T gx1, T gy1, T gx2, T gy2, T garea, const T* x1, const T* y1, const T* x2, const T* y2,
                         const T* area, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = iou_pair(gx1, gy1, gx2, gy2, garea, x1[i], y1[i], x2[i], y2[i], area[i]);
}
DETKIT_MULTIVERSION inline void iou_row(float gx1, float gy1, float gx2, float gy2, float garea, const float* x1,
                                        const float* y1, const float* x2, const float* y2, const float* area,
                                        int64_t n, float* out) {
  iou_row_impl(gx1, gy1, gx2, gy2, garea, x1, y1, x2, y2, area, n, out);
}
DETKIT_MULTIVERSION inline void iou_row(double gx1, double gy1, double gx2, double gy2, double garea,
                                        const double* x1, const double* y1, const double* x2, const double* y2,
                                        const double* area, int64_t n, double* out) {
  iou_row_impl(gx1, gy1, gx2, gy2, garea, x1, y1, x2, y2, area, n, out);
}

// Runs fn(begin, end) over [0, n) split across `threads` std::threads. Plain
// threads rather than OpenMP: torch ships its own OpenMP runtime, and a second
// spinning pool would steal the two cores from torch's next op.
template <typename Fn>
void parallel_for(int64_t n, int threads, Fn fn) {
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n)));
  if (threads == 1) {
    fn(int64_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(fn, b, e);
  }
  fn(int64_t(0), std::min(n, chunk));
  for (auto& th : pool) th.join();
}

// Sortable unsigned key of a finite float/double: ascending keys follow
// descending scores. -0.0 is folded into +0.0 so that they tie, as in `>`.
inline uint32_t descending_key(float v) {
  uint32_t u;
  v = v == 0.0f ? 0.0f : v;
  std::memcpy(&u, &v, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~u;
}
inline uint64_t descending_key(double v) {
  uint64_t u;
  v = v == 0.0 ? 0.0 : v;
  std::memcpy(&u, &v, sizeof u);
  u = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  return ~u;
}

// Order of `scores` from high to low; equal scores keep ascending index, so
// every kernel breaks ties the same deterministic way. A stable LSD radix sort
// (11-bit digits) on the score keys: O(n), ~5x faster than std::sort here.
template <typename T>
std::vector<int64_t> descending_order(const T* scores, int64_t n) {
  using Key = decltype(descending_key(T()));
  constexpr int kBits = 11, kBuckets = 1 << kBits;
  constexpr int kPasses = (8 * sizeof(Key) + kBits - 1) / kBits;
  std::vector<int64_t> order(n), tmp(n);
  if (n == 0) return order;
  std::vector<Key> keys(n), tmp_keys(n);
  for (int64_t i = 0; i < n; ++i) {
    order[i] = i;
    keys[i] = descending_key(scores[i]);
  }
  std::vector<int64_t> count(kBuckets);
  for (int pass = 0; pass < kPasses; ++pass) {
    const int shift = pass * kBits;
    std::fill(count.begin(), count.end(), 0);
    for (int64_t i = 0; i < n; ++i) ++count[(keys[i] >> shift) & (kBuckets - 1)];
    if (count[(keys[0] >> shift) & (kBuckets - 1)] == n) continue;  // digit is constant
    int64_t sum = 0;
    for (auto& c : count) {
      const int64_t k = c;
      c = sum;
      sum += k;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t dst = count[(keys[i] >> shift) & (kBuckets - 1)]++;
      tmp[dst] = order[i];
      tmp_keys[dst] = keys[i];
    }
    order.swap(tmp);
    keys.swap(tmp_keys);
  }
  return order;
}

}  // namespace detkit
