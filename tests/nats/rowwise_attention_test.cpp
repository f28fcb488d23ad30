// Tests of the row-wise NAtS kernels (nats/cuda/nats_rows.h through nats/cuda/device_attention.h), the
// GPU's attention. On CPU tensors the very functions the CUDA threads run are executed in host loops, so
// these tests check the GPU arithmetic on every machine: outputs, lse and every gradient (q, k, v, types in
// the three grad modes, regulariser included) against the reference in double on the edge-case shapes, and
// against the CPU fused kernel in float on a realistic one. Where a GPU and a CUDA LibTorch are present, the
// same comparisons run on CUDA tensors (fp32 and bf16, T up to 8k); elsewhere those tests are skipped and say
// why.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nats/attention.h"
#include "nats/cuda/device_attention.h"
#include "nats/fused_attention.h"
#include "nats/nats_attention_reference.h"
#include "tests/nats/attention_test_inputs.h"

namespace nats {
namespace {

using namespace attention_test;  // NOLINT: the shared test inputs, tests/nats/attention_test_inputs.h

struct Compared {
  double worst_type_grad = 0;  // max |dtypes| of the reference, to show the test compares real signal
};

// Row-wise forward + backward on `device` vs the reference in double on the same inputs.
Compared CompareRowwiseWithReference(const Case& c, int seed, MaskGradMode mode, double lambda,
                                     torch::Dtype dtype, Tolerance tol, torch::Device device,
                                     int64_t query_begin = 0) {
  const Inputs in = RandomInputs(c, seed, dtype);
  const std::string what = Describe(c, seed) + " mode" + std::to_string(static_cast<int>(mode)) + " lambda" +
                           std::to_string(lambda) + " " + std::string(c10::toString(dtype)) + " on " +
                           device.str() + " query_begin " + std::to_string(query_begin);
  AttentionOptions options;
  options.window = c.window;
  options.lambda = lambda;
  options.grad_mode = mode;
  options.query_begin = query_begin;
  const bool full = mode == MaskGradMode::kUnmasked;
  const auto dbl = [](const at::Tensor& x) { return x.to(torch::kDouble); };
  at::Tensor dout = in.dout.clone();
  if (query_begin > 0) dout.narrow(2, 0, query_begin).zero_();  // the contract: no gradient for those rows
  const NatsReferenceForwardResult ref_fwd =
      NatsReferenceForward(dbl(in.q), dbl(in.k), dbl(in.v), in.types, c.window, full);
  const NatsReferenceGradients ref = NatsReferenceBackward(dbl(in.q), dbl(in.k), dbl(in.v), in.types, ref_fwd,
                                                           dbl(dout), options, /*need_type_grad=*/true);
  const auto on = [&](const at::Tensor& x) { return x.to(device); };
  const FusedForwardResult fwd =
      RowwiseNatsForward(on(in.q), on(in.k), on(in.v), on(in.types), c.window, true, full, query_begin);
  const auto rows = [&](const at::Tensor& x) { return x.narrow(2, query_begin, c.t - query_begin).cpu(); };
  ExpectClose(rows(fwd.out), rows(ref_fwd.out), tol.rtol, tol.atol, what + " out");
  ExpectClose(rows(fwd.lse_masked), rows(ref_fwd.lse_masked), tol.rtol, tol.atol, what + " lse");
  if (full) ExpectClose(rows(fwd.lse_full), rows(ref_fwd.lse_full), tol.rtol, tol.atol, what + " lse_full");
  if (query_begin > 0) {
    EXPECT_EQ(fwd.out.narrow(2, 0, query_begin).abs().max().item<double>(), 0.0) << what;
  }
  const FusedGradients got =
      RowwiseNatsBackward(on(in.q), on(in.k), on(in.v), on(in.types), fwd, on(dout), options, true);
  ExpectClose(rows(got.dq), rows(ref.dq), tol.rtol, tol.atol, what + " dq");
  ExpectClose(got.dk.cpu(), ref.dk, tol.rtol, tol.atol, what + " dk");
  ExpectClose(got.dv.cpu(), ref.dv, tol.rtol, tol.atol, what + " dv");
  for (int64_t o = 0; o < kNumTokenTypes; ++o) {  // dL/dg holds the collected term, the smallest signal
    ExpectClose(got.dtypes.select(-1, o).cpu(), ref.dtypes.select(-1, o), tol.rtol, tol.atol,
                what + " dtypes option " + std::to_string(o));
  }
  // Without the type gradient only visible rows are visited; q/k/v gradients must not change.
  const FusedGradients plain =
      RowwiseNatsBackward(on(in.q), on(in.k), on(in.v), on(in.types), fwd, on(dout), options, false);
  EXPECT_FALSE(plain.dtypes.defined());
  ExpectClose(rows(plain.dq), rows(ref.dq), tol.rtol, tol.atol, what + " dq (no type grad)");
  ExpectClose(plain.dk.cpu(), ref.dk, tol.rtol, tol.atol, what + " dk (no type grad)");
  ExpectClose(plain.dv.cpu(), ref.dv, tol.rtol, tol.atol, what + " dv (no type grad)");
  return {ref.dtypes.abs().max().item<double>()};
}

const torch::Device kCpu(torch::kCPU);

TEST(RowwiseAttention, MatchesReferenceInDoubleAllModesOnTheHost) {
  int seed = 0;
  for (const Case& c : DoubleCases()) {
    for (MaskGradMode mode : {MaskGradMode::kClipped, MaskGradMode::kExact, MaskGradMode::kUnmasked}) {
      for (double lambda : {0.0, 0.3}) {
        CompareRowwiseWithReference(c, ++seed, mode, lambda, torch::kDouble, {1e-9, 1e-10}, kCpu);
      }
    }
  }
}

TEST(RowwiseAttention, HeadSizesOfEveryCompiledBound) {
  // d picks the kernels' per-thread row bound (32, 64, 128, 256); sizes between bounds leave a tail unused.
  int seed = 100;
  for (int64_t d : {5, 32, 33, 64, 96, 128, 200, 256}) {
    Case c{1, 2, 1, 70, d, 5, Mix::kLearned, true};
    CompareRowwiseWithReference(c, ++seed, MaskGradMode::kClipped, 0.1, torch::kDouble, {1e-9, 1e-10}, kCpu);
  }
}

TEST(RowwiseAttention, QueryBeginLeavesTheOtherRowsExact) {
  Case c{1, 4, 2, 200, 8, 6, Mix::kLongLocal, true};
  for (int64_t begin : {1, 63, 64, 130}) {
    CompareRowwiseWithReference(c, 7, MaskGradMode::kClipped, 0.2, torch::kDouble, {1e-9, 1e-10}, kCpu,
                                begin);
  }
}

TEST(RowwiseAttention, MatchesTheCpuFusedKernelInFloat) {
  // A realistic shape in float: the two kernels sum in different orders, so they agree to float rounding.
  Case c{2, 4, 2, 700, 64, 32, Mix::kLearned, true};
  const Inputs in = RandomInputs(c, 3, torch::kFloat);
  AttentionOptions options;
  options.window = c.window;
  options.lambda = 1e-3;
  const FusedForwardResult want_fwd = FusedNatsForward(in.q, in.k, in.v, in.types, c.window, true, false);
  const FusedForwardResult got_fwd = RowwiseNatsForward(in.q, in.k, in.v, in.types, c.window, true, false);
  ExpectClose(got_fwd.out, want_fwd.out, 1e-4, 1e-5, "out");
  ExpectClose(got_fwd.lse_masked, want_fwd.lse_masked, 1e-5, 1e-5, "lse");
  const FusedGradients want = FusedNatsBackward(in.q, in.k, in.v, in.types, want_fwd, in.dout, options, true);
  const FusedGradients got = RowwiseNatsBackward(in.q, in.k, in.v, in.types, got_fwd, in.dout, options, true);
  ExpectClose(got.dq, want.dq, 1e-4, 1e-5, "dq");
  ExpectClose(got.dk, want.dk, 1e-4, 1e-5, "dk");
  ExpectClose(got.dv, want.dv, 1e-4, 1e-5, "dv");
  ExpectClose(got.dtypes, want.dtypes, 1e-4, 1e-5, "dtypes");
  EXPECT_EQ(got.dq.scalar_type(), torch::kFloat);
}

TEST(RowwiseAttention, RejectsTypesOutsideTheThreeOptions) {
  Case c{1, 2, 1, 10, 8, 2, Mix::kUniform, true};
  Inputs in = RandomInputs(c, 1, torch::kFloat);
  in.types[0][0][3] = 3;
  try {
    RowwiseNatsForward(in.q, in.k, in.v, in.types, c.window, true, false);
    FAIL() << "type 3 accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("TokenType values 0..2"), std::string::npos) << e.what();
  }
  const at::Tensor wide = torch::randn({1, 1, 4, 300});
  EXPECT_THROW(RowwiseNatsForward(wide, wide, wide, torch::zeros({1, 1, 4}, torch::kChar), 2, true, false),
               c10::Error);
}

// ---- On the GPU: the same comparisons on CUDA tensors (the check script launch/gpu/device_check.sh runs
// these on an H200). Skipped without a GPU or with a CPU LibTorch.

bool CudaReady(std::string* why) {
  if (!RowwiseKernelsOnCuda()) {
    *why = "this build has no CUDA kernels (CPU LibTorch or no nvcc)";
    return false;
  }
  if (!torch::cuda::is_available()) {
    *why = "no CUDA device";
    return false;
  }
  return true;
}

#define NATS_SKIP_WITHOUT_CUDA() \
  do {                           \
    std::string why;             \
    if (!CudaReady(&why)) {      \
      GTEST_SKIP() << why;       \
    }                            \
  } while (0)

TEST(RowwiseAttentionCuda, MatchesReferenceInFloatOnTheEdgeCases) {
  NATS_SKIP_WITHOUT_CUDA();
  int seed = 200;
  for (const Case& c : DoubleCases()) {
    for (MaskGradMode mode : {MaskGradMode::kClipped, MaskGradMode::kExact, MaskGradMode::kUnmasked}) {
      CompareRowwiseWithReference(c, ++seed, mode, 0.3, torch::kFloat, {2e-4, 2e-5}, torch::kCUDA);
    }
  }
  Case c{1, 4, 2, 200, 8, 6, Mix::kLongLocal, true};
  CompareRowwiseWithReference(c, 9, MaskGradMode::kClipped, 0.2, torch::kFloat, {2e-4, 2e-5}, torch::kCUDA,
                              70);
}

TEST(RowwiseAttentionCuda, MatchesTheHostKernelsAtLongSequences) {
  // T up to 8k with GQA and a learned-looking mix: the GPU against the host run of the same functions (the
  // reference's T x T tensors would dominate the test's time at these lengths).
  NATS_SKIP_WITHOUT_CUDA();
  for (int64_t t : {1, 2, 63, 64, 65, 1000, 4096, 8192}) {
    Case c{1, 8, 2, t, 64, 64, Mix::kLearned, true};
    const Inputs in = RandomInputs(c, static_cast<int>(t), torch::kFloat);
    AttentionOptions options;
    options.window = c.window;
    options.lambda = 1e-3;
    const auto gpu = [](const at::Tensor& x) { return x.to(torch::kCUDA); };
    const FusedForwardResult host_fwd = RowwiseNatsForward(in.q, in.k, in.v, in.types, c.window, true, false);
    const FusedForwardResult gpu_fwd =
        RowwiseNatsForward(gpu(in.q), gpu(in.k), gpu(in.v), gpu(in.types), c.window, true, false);
    const std::string what = "T " + std::to_string(t);
    ExpectClose(gpu_fwd.out.cpu(), host_fwd.out, 1e-4, 1e-5, what + " out");
    const bool type_grad = t <= 4096;  // O(T^2) on the host
    const FusedGradients want =
        RowwiseNatsBackward(in.q, in.k, in.v, in.types, host_fwd, in.dout, options, type_grad);
    const FusedGradients got = RowwiseNatsBackward(gpu(in.q), gpu(in.k), gpu(in.v), gpu(in.types), gpu_fwd,
                                                   gpu(in.dout), options, type_grad);
    ExpectClose(got.dq.cpu(), want.dq, 1e-4, 1e-5, what + " dq");
    ExpectClose(got.dk.cpu(), want.dk, 1e-4, 1e-5, what + " dk");
    ExpectClose(got.dv.cpu(), want.dv, 1e-4, 1e-5, what + " dv");
    if (type_grad) ExpectClose(got.dtypes.cpu(), want.dtypes, 1e-3, 1e-5, what + " dtypes");
  }
}

TEST(RowwiseAttentionCuda, Bf16InputsStayCloseToFloat) {
  // bf16 inputs are computed in float; the stated tolerance is bf16's rounding of q, k, v (about 3 digits).
  NATS_SKIP_WITHOUT_CUDA();
  Case c{2, 8, 2, 1024, 64, 32, Mix::kLearned, true};
  const Inputs in = RandomInputs(c, 5, torch::kFloat);
  const auto bf = [](const at::Tensor& x) { return x.to(torch::kCUDA, torch::kBFloat16); };
  const auto f32 = [](const at::Tensor& x) { return x.to(torch::kCUDA, torch::kBFloat16).to(torch::kFloat); };
  const FusedForwardResult want =
      RowwiseNatsForward(f32(in.q), f32(in.k), f32(in.v), in.types.cuda(), c.window, true, false);
  const FusedForwardResult got =
      RowwiseNatsForward(bf(in.q), bf(in.k), bf(in.v), in.types.cuda(), c.window, true, false);
  EXPECT_EQ(got.out.scalar_type(), torch::kBFloat16);
  ExpectClose(got.out.cpu(), want.out.cpu(), 1e-2, 1e-2, "bf16 out");
}

TEST(RowwiseAttentionCuda, AutogradThroughTheFusedEntryPointOnCuda) {
  // AttentionImpl::kFused on CUDA tensors runs these kernels inside the same autograd function as on CPU.
  NATS_SKIP_WITHOUT_CUDA();
  Case c{1, 4, 2, 300, 32, 8, Mix::kLearned, true};
  const Inputs in = RandomInputs(c, 11, torch::kFloat);
  AttentionOptions options;
  options.window = c.window;
  options.impl = AttentionImpl::kFused;
  const at::Tensor onehot = at::one_hot(in.types.to(torch::kLong), 3).to(torch::kFloat);
  std::vector<at::Tensor> grads[2];
  for (int side = 0; side < 2; ++side) {
    const torch::Device dev = side == 0 ? kCpu : torch::Device(torch::kCUDA);
    at::Tensor q = in.q.to(dev).requires_grad_(), k = in.k.to(dev).requires_grad_();
    at::Tensor v = in.v.to(dev).requires_grad_(), y = onehot.to(dev).requires_grad_();
    at::Tensor out = NatsAttention(q, k, v, y, options);
    (out * in.dout.to(dev)).sum().backward();
    grads[side] = {out.detach().cpu(), q.grad().cpu(), k.grad().cpu(), v.grad().cpu(), y.grad().cpu()};
  }
  const char* names[] = {"out", "dq", "dk", "dv", "dtypes"};
  for (int x = 0; x < 5; ++x) ExpectClose(grads[1][x], grads[0][x], 1e-4, 1e-5, names[x]);
}

}  // namespace
}  // namespace nats
