// bench/gpu_attention_bench: NAtS attention on the GPU (the row-wise kernels, nats/cuda/device_attention.h)
// against LibTorch's fused SDPA (flash attention where it applies) at long sequences. B = 1, H = 12, D = 64,
// a learned-looking type mix (3% global, 12% local, 85% sliding, W = 256).
// Per length: NAtS forward, NAtS forward + backward with the type gradient (what training runs), sparse
// prefill (no lse kept), SDPA causal forward and forward + backward in bf16 and fp32, each the median of a
// few CUDA-synchronised runs after a warm-up, and the ratio SDPA / NAtS (> 1: NAtS faster).
// One JSON line per length (machine-readable; launch/gpu/device_check.sh collects them) plus a table.
// Usage: gpu_attention_bench [--lengths 4096,16384,32768] [--reps 3]
// Without a CUDA LibTorch build or a GPU it says so and exits 0.
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "nats/attention.h"
#include "nats/cuda/device_attention.h"
#include "nats/fused_attention.h"

namespace nats {
namespace {

constexpr int64_t kHeads = 12, kHeadDim = 64, kWindow = 256;

double MedianSeconds(const std::function<void()>& f, int reps) {
  f();  // warm-up
  torch::cuda::synchronize();
  std::vector<double> s;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    torch::cuda::synchronize();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

int Run(const std::vector<int64_t>& lengths, int reps) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  std::printf("%8s %12s %14s %12s %12s %14s %12s %14s\n", "T", "nats fwd ms", "nats fwd+bwd", "nats prefill",
              "sdpa bf16 f", "sdpa bf16 f+b", "sdpa fp32 f", "f+b ratio bf16");
  for (int64_t t : lengths) {
    torch::manual_seed(0);
    const at::Tensor q = torch::randn({1, kHeads, t, kHeadDim}, cuda), k = torch::randn_like(q),
                     v = torch::randn_like(q), dout = torch::randn_like(q);
    const at::Tensor u = torch::rand({1, kHeads, t}, cuda);
    at::Tensor types = torch::where(u < 0.03, torch::zeros_like(u),
                                    torch::where(u < 0.15, torch::ones_like(u), torch::full_like(u, 2)))
                           .to(torch::kChar);
    types.select(-1, 0).fill_(0);
    AttentionOptions options;
    options.window = kWindow;
    FusedForwardResult fwd;
    const double nats_fwd =
        MedianSeconds([&] { fwd = RowwiseNatsForward(q, k, v, types, kWindow, true, false); }, reps);
    const double nats_bwd = MedianSeconds(
        [&] { RowwiseNatsBackward(q, k, v, types, fwd, dout, options, /*need_type_grad=*/true); }, reps);
    const double nats_prefill =
        MedianSeconds([&] { RowwiseNatsForward(q, k, v, types, kWindow, false, false); }, reps);
    double sdpa[2][2] = {{0, 0}, {0, 0}};  // [bf16, fp32][fwd, fwd+bwd]
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
    for (int p = 0; p < 2; ++p) {
      const auto dtype = p == 0 ? torch::kBFloat16 : torch::kFloat;
      const at::Tensor qq = q.to(dtype), kk = k.to(dtype), vv = v.to(dtype), dd = dout.to(dtype);
      sdpa[p][0] = MedianSeconds(
          [&] {
            torch::NoGradGuard no_grad;
            at::scaled_dot_product_attention(qq, kk, vv, {}, 0.0, true);
          },
          reps);
      const at::Tensor qg = qq.detach().requires_grad_(), kg = kk.detach().requires_grad_(),
                       vg = vv.detach().requires_grad_();
      sdpa[p][1] = MedianSeconds(
          [&] {
            at::Tensor o = at::scaled_dot_product_attention(qg, kg, vg, {}, 0.0, true);
            o.backward(dd);
          },
          reps);
    }
#endif
    const double nats_train = nats_fwd + nats_bwd;
    std::printf("%8lld %12.2f %14.2f %12.2f %12.2f %14.2f %12.2f %14.3f\n", static_cast<long long>(t),
                nats_fwd * 1e3, nats_train * 1e3, nats_prefill * 1e3, sdpa[0][0] * 1e3, sdpa[0][1] * 1e3,
                sdpa[1][0] * 1e3, sdpa[0][1] / nats_train);
    std::printf(
        "{\"kind\":\"gpu_attention\",\"t\":%lld,\"heads\":%lld,\"head_dim\":%lld,\"window\":%lld,"
        "\"nats_fwd_ms\":%.3f,\"nats_fwd_bwd_ms\":%.3f,\"nats_prefill_ms\":%.3f,\"sdpa_bf16_fwd_ms\":%.3f,"
        "\"sdpa_bf16_fwd_bwd_ms\":%.3f,\"sdpa_fp32_fwd_ms\":%.3f,\"sdpa_fp32_fwd_bwd_ms\":%.3f,"
        "\"speedup_fwd_bwd_vs_bf16_sdpa\":%.4f,\"speedup_prefill_vs_bf16_sdpa\":%.4f}\n",
        static_cast<long long>(t), static_cast<long long>(kHeads), static_cast<long long>(kHeadDim),
        static_cast<long long>(kWindow), nats_fwd * 1e3, nats_train * 1e3, nats_prefill * 1e3,
        sdpa[0][0] * 1e3, sdpa[0][1] * 1e3, sdpa[1][0] * 1e3, sdpa[1][1] * 1e3, sdpa[0][1] / nats_train,
        sdpa[0][0] / nats_prefill);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace nats

int main(int argc, char** argv) {
  std::vector<int64_t> lengths{4096, 16384, 32768};
  int reps = 3;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--lengths" && a + 1 < argc) {
      lengths.clear();
      std::stringstream ss(argv[++a]);
      for (std::string x; std::getline(ss, x, ',');) lengths.push_back(std::atoll(x.c_str()));
    } else if (arg == "--reps" && a + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++a]));
    } else {
      std::fprintf(stderr, "usage: gpu_attention_bench [--lengths 4096,16384,32768] [--reps 3]\n");
      return 2;
    }
  }
  if (!nats::RowwiseKernelsOnCuda() || !torch::cuda::is_available()) {
    std::printf(
        "gpu_attention_bench: needs a build against a CUDA LibTorch and a GPU (%s); nothing measured\n",
        nats::RowwiseKernelsOnCuda() ? "no GPU found" : "this build has no CUDA kernels");
    return 0;
  }
  return nats::Run(lengths, reps);
}
