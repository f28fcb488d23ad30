// The fused attention kernel against the BLAS it runs on: cblas_sgemm on one thread at the kernel's own tile
// shapes (64 x 64 x D for S = Q K^T and dP, 64 x D x 64 for P V and the dq/dk/dv products), times the thread
// count, is the ceiling; the kernel's achieved rate is its executed FLOPs (nats/executed_flops.h) over its
// wall time, dense causal (every type global) forward and forward + backward, so the gap is what the
// elementwise work, gathers and scheduling around the tiles cost.
//
// usage: tile_gemm_bench [--threads 2] [--t 2048] [--d 64] [--heads 12] [--blas_threads 1] [--reps 7]
// (each rate is the best of --reps timings: this VM's speed swings between runs)
#include <cblas.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nats/attention.h"
#include "nats/executed_flops.h"
#include "nats/fused_attention.h"

namespace {

using Clock = std::chrono::steady_clock;

template <typename Fn>
double BestSeconds(int reps, const Fn& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// GFLOP/s of one thread's cblas_sgemm at row-major (m, n, k) with the given transposes, over many calls.
double TileGflops(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, int reps) {
  std::vector<float> a(64 * 64 * 2, 0.5f), b(64 * 64 * 2, 0.25f), c(64 * 64 * 2, 0.f);
  const int lda = ta == CblasTrans ? m : k, ldb = tb == CblasTrans ? k : n;
  const int calls = 4000;
  const double s = BestSeconds(reps, [&] {
    for (int i = 0; i < calls; ++i)
      cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.f, a.data(), lda, b.data(), ldb, 1.f, c.data(), n);
  });
  return 2.0 * m * n * k * calls / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, t = 2048, d = 64, heads = 12, blas_threads = 1, reps = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--threads")
      threads = v;
    else if (a == "--t")
      t = v;
    else if (a == "--d")
      d = v;
    else if (a == "--heads")
      heads = v;
    else if (a == "--blas_threads")
      blas_threads = v;
    else if (a == "--reps")
      reps = v;
    else {
      std::fprintf(stderr,
                   "usage: tile_gemm_bench [--threads 2] [--t 2048] [--d 64] [--heads 12] [--blas_threads 1] "
                   "[--reps 7]\n");
      return 2;
    }
  }
  openblas_set_num_threads(blas_threads);  // the trainer sets it to its thread count
  const double s_tile = TileGflops(CblasTrans, CblasTrans, 64, 64, d, reps);  // S = Q K^T (transposed Q tile)
  const double pv_tile = TileGflops(CblasNoTrans, CblasNoTrans, 64, d, 64, reps);  // O += P V
  const double tile = 0.5 * (s_tile + pv_tile);
  at::set_num_threads(threads);
  torch::manual_seed(0);
  at::Tensor q = torch::randn({1, heads, t, d}), k = torch::randn({1, heads, t, d}),
             v = torch::randn({1, heads, t, d});
  nats::TakeExecutedAttentionFlops();
  double fwd_flops = 0;
  const double fwd = BestSeconds(reps, [&] {
    torch::NoGradGuard no_grad;
    nats::FusedCausalAttention(q, k, v);
    fwd_flops = static_cast<double>(nats::TakeExecutedAttentionFlops());
  });
  at::Tensor qg = q.clone().requires_grad_(true), kg = k.clone().requires_grad_(true),
             vg = v.clone().requires_grad_(true), dout = torch::randn({1, heads, t, d});
  double train_flops = 0;
  const double train = BestSeconds(reps, [&] {
    at::Tensor out = nats::FusedCausalAttention(qg, kg, vg);
    (out * dout).sum().backward();
    train_flops = static_cast<double>(nats::TakeExecutedAttentionFlops());
  });
  const double ceiling = tile * threads;
  std::printf("| measurement | GFLOP/s | vs sgemm at tile shapes x %d threads |\n|---|---|---|\n", threads);
  std::printf("| cblas_sgemm 64x64x%d (T,T), 1 thread | %.1f | |\n", d, s_tile);
  std::printf("| cblas_sgemm 64x%dx64 (N,N), 1 thread | %.1f | |\n", d, pv_tile);
  std::printf("| ceiling: mean of the two x %d threads | %.1f | 100%% |\n", threads, ceiling);
  std::printf("| fused dense causal forward, T %d, %d heads | %.1f | %.0f%% |\n", t, heads,
              fwd_flops / fwd / 1e9, 100 * fwd_flops / fwd / 1e9 / ceiling);
  std::printf("| fused dense causal forward + backward | %.1f | %.0f%% |\n", train_flops / train / 1e9,
              100 * train_flops / train / 1e9 / ceiling);
  return 0;
}
