// nats/vector_math.h
//
// Elementwise helpers that the CPU kernels share (the fused attention's row kernels, nats/fused/, and the
// LM head's loss rows, nats/linear_cross_entropy.cpp): a Cephes-style float exp that vectorises, row
// reductions in independent lanes, and the attributes that make a kernel entry point multiversioned
// (AVX-512 / AVX2 / baseline clones chosen at load time) with its helpers inlined into every clone. Include
// it from a .cpp after `#pragma GCC optimize("O3")`: the project builds with -O2, where GCC does not
// vectorise these loops.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__gnu_linux__)
#define NATS_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NATS_MULTIVERSION
#endif

// Everything a multiversioned entry point calls is forced inline: a helper GCC leaves out of line is compiled
// once for the baseline target, not per clone, and runs scalar SSE (the fused backward's row did: 22% of
// tile_gemm_bench, all movss / mulss).
#if defined(__GNUC__)
#define NATS_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define NATS_ALWAYS_INLINE inline
#endif

namespace nats {

// Cephes expf: round x / ln2 to n, a degree-6 polynomial on the remainder, times 2^n via the exponent bits.
// Relative error < 1e-7 on [-87, 88] (inputs are clamped there: exp(-inf) gives 1.6e-38, not 0); 0.4 ns per
// element vectorised vs 3.3 ns for the scalar std::exp loop of the -O2 default build.
NATS_ALWAYS_INLINE float FastExp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float n = x * 1.44269504088896341f;
  n = (n + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
NATS_ALWAYS_INLINE double FastExp(double x) { return std::exp(x); }  // double is for tight tests, not speed

template <typename T>
constexpr T NegInf() {
  return -std::numeric_limits<T>::infinity();
}

// Row reductions (max, sum) keep kLanes independent partial results, combined at the end in a fixed order
// (deterministic): a single accumulator is a serial chain GCC must not reorder without -ffast-math (which
// the masks' infinities forbid), so it stays scalar; lanes vectorise.
constexpr int kLanes = 16;

// The lanes are combined as a tree of halves (8 + 8, 4 + 4, 2 + 2, 1 + 1), which GCC turns into vector
// operations; a sequential combination was 16 dependent scalar operations per row, as costly as the row's
// own work at the fused kernel's 64-column rows.
template <typename T, typename Combine>
NATS_ALWAYS_INLINE T CombineLanes(const T* lanes, const Combine& combine) {
  static_assert(kLanes == 16, "the tree below combines 16 lanes");
  T a[8], b[4];
  for (int l = 0; l < 8; ++l) a[l] = combine(lanes[l], lanes[l + 8]);
  for (int l = 0; l < 4; ++l) b[l] = combine(a[l], a[l + 4]);
  return combine(combine(b[0], b[2]), combine(b[1], b[3]));
}

template <typename T>
NATS_ALWAYS_INLINE T MaxOfLanes(const T* lanes) {
  return CombineLanes(lanes, [](T x, T y) { return y > x ? y : x; });
}

template <typename T>
NATS_ALWAYS_INLINE T SumOfLanes(const T* lanes) {
  return CombineLanes(lanes, [](T x, T y) { return x + y; });
}

// body(c, lane) for c in [0, n), lane = c mod kLanes for the full blocks (the tail reuses lanes from 0): the
// inner loop over lanes is what vectorises.
template <typename Index, typename Body>
NATS_ALWAYS_INLINE void ForEachInLanes(Index n, const Body& body) {
  Index c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) body(c + l, l);
  }
  for (int l = 0; c < n; ++c, ++l) body(c, l);
}

}  // namespace nats
