// Tests of the fused NAtS attention, nats/fused_attention.cpp, against the reference (the dense oracle,
// nats/nats_attention_reference.h; docs/method.md sections 4, 5 and 9): outputs, lse and every gradient (q,
// k, v, types) on random shapes (GQA, T not a multiple of the 64-row block, W >= T), type mixes (uniform,
// learned-looking 3% global / 12% local / 85% sliding, all-global, all-sliding, long local segments), all
// three grad modes, with and without the regulariser; double for tight tolerances, float for realistic ones;
// 1 and 2 threads. Also the autograd entry point (impl kFused vs kReference) and the sparse prefill.
#include "nats/fused_attention.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "nats/attention.h"
#include "nats/executed_flops.h"
#include "nats/nats_attention_reference.h"
#include "nats/token_type.h"
#include "tests/nats/attention_test_inputs.h"

namespace nats {
namespace {

using namespace attention_test;  // NOLINT: the shared test inputs, tests/nats/attention_test_inputs.h

// Fused forward + backward vs the reference, directly on the int types.
void CompareWithReference(const Case& c, int seed, MaskGradMode mode, double lambda, torch::Dtype dtype,
                          Tolerance tol) {
  const Inputs in = RandomInputs(c, seed, dtype);
  const std::string what = Describe(c, seed) + " mode" + std::to_string(static_cast<int>(mode)) + " lambda" +
                           std::to_string(lambda) + (dtype == torch::kDouble ? " double" : " float");
  AttentionOptions options;
  options.window = c.window;
  options.lambda = lambda;
  options.grad_mode = mode;
  const bool full = mode == MaskGradMode::kUnmasked;
  // The reference runs in double on the same (possibly float) inputs: the oracle.
  const auto dbl = [](const at::Tensor& x) { return x.to(torch::kDouble); };
  const NatsReferenceForwardResult ref_fwd =
      NatsReferenceForward(dbl(in.q), dbl(in.k), dbl(in.v), in.types, c.window, full);
  const NatsReferenceGradients ref = NatsReferenceBackward(dbl(in.q), dbl(in.k), dbl(in.v), in.types, ref_fwd,
                                                           dbl(in.dout), options, /*need_type_grad=*/true);
  const FusedForwardResult fwd = FusedNatsForward(in.q, in.k, in.v, in.types, c.window, true, full);
  ExpectClose(fwd.out, ref_fwd.out, tol.rtol, tol.atol, what + " out");
  ExpectClose(fwd.lse_masked, ref_fwd.lse_masked, tol.rtol, tol.atol, what + " lse");
  if (full) ExpectClose(fwd.lse_full, ref_fwd.lse_full, tol.rtol, tol.atol, what + " lse_full");
  const FusedGradients got = FusedNatsBackward(in.q, in.k, in.v, in.types, fwd, in.dout, options, true);
  ExpectClose(got.dq, ref.dq, tol.rtol, tol.atol, what + " dq");
  ExpectClose(got.dk, ref.dk, tol.rtol, tol.atol, what + " dk");
  ExpectClose(got.dv, ref.dv, tol.rtol, tol.atol, what + " dv");
  ExpectClose(got.dtypes, ref.dtypes, tol.rtol, tol.atol, what + " dtypes");
  // Each option separately: dL/dg holds the collected term, the smallest signal.
  for (int64_t o = 0; o < kNumTokenTypes; ++o) {
    ExpectClose(got.dtypes.select(-1, o), ref.dtypes.select(-1, o), tol.rtol, tol.atol,
                what + " dtypes option " + std::to_string(o));
  }
  // Without the type gradient the backward visits visible keys only; q/k/v gradients must not change.
  const FusedGradients plain = FusedNatsBackward(in.q, in.k, in.v, in.types, fwd, in.dout, options, false);
  EXPECT_FALSE(plain.dtypes.defined());
  ExpectClose(plain.dq, ref.dq, tol.rtol, tol.atol, what + " dq (no type grad)");
  ExpectClose(plain.dk, ref.dk, tol.rtol, tol.atol, what + " dk (no type grad)");
  ExpectClose(plain.dv, ref.dv, tol.rtol, tol.atol, what + " dv (no type grad)");
}

TEST(FusedAttention, MatchesReferenceInDoubleAllModes) {
  const Tolerance tol{1e-10, 1e-11};
  int seed = 0;
  for (const Case& c : DoubleCases()) {
    for (MaskGradMode mode : {MaskGradMode::kExact, MaskGradMode::kClipped, MaskGradMode::kUnmasked}) {
      for (double lambda : {0.0, 1e-3}) CompareWithReference(c, seed++, mode, lambda, torch::kDouble, tol);
    }
  }
}

TEST(FusedAttention, MatchesReferenceInDoubleWithTwoThreads) {
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  const Tolerance tol{1e-10, 1e-11};
  int seed = 100;
  for (const Case& c : DoubleCases()) {
    CompareWithReference(c, seed++, MaskGradMode::kClipped, 1e-4, torch::kDouble, tol);
    CompareWithReference(c, seed++, MaskGradMode::kExact, 0.0, torch::kDouble, tol);
  }
  at::set_num_threads(saved);
}

TEST(FusedAttention, MatchesReferenceInFloatOnRealisticShapes) {
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  // Float vs a double oracle: the error is float rounding of sums over up to T terms.
  const Tolerance tol{2e-4, 1e-5};
  int seed = 200;
  for (Mix mix : {Mix::kLearned, Mix::kUniform, Mix::kAllGlobal, Mix::kLongLocal}) {
    const Case c{1, 4, 2, 333, 64, 64, mix, true};
    for (MaskGradMode mode : {MaskGradMode::kClipped, MaskGradMode::kUnmasked}) {
      CompareWithReference(c, seed++, mode, 1e-6, torch::kFloat, tol);
    }
  }
  at::set_num_threads(saved);
}

TEST(FusedAttention, RandomShapesSweep) {
  torch::manual_seed(7);
  const Tolerance tol{1e-10, 1e-11};
  for (int seed = 300; seed < 316; ++seed) {
    Case c;
    c.h_kv = torch::randint(1, 3, {1}).item<int64_t>();
    c.h = c.h_kv * torch::randint(1, 4, {1}).item<int64_t>();
    c.b = torch::randint(1, 3, {1}).item<int64_t>();
    c.t = torch::randint(1, 200, {1}).item<int64_t>();
    c.d = torch::randint(1, 24, {1}).item<int64_t>();
    c.window = torch::randint(0, 80, {1}).item<int64_t>();
    c.mix = static_cast<Mix>(seed % 6);
    c.force_ends = seed % 3 != 0;
    CompareWithReference(c, seed, static_cast<MaskGradMode>(seed % 3), seed % 2 ? 1e-3 : 0.0, torch::kDouble,
                         tol);
  }
}

TEST(FusedAttention, AllGlobalEqualsDenseCausal) {
  const Case c{2, 4, 2, 130, 16, 3, Mix::kAllGlobal, true};
  const Inputs in = RandomInputs(c, 1, torch::kDouble);
  const at::Tensor got = NatsSparsePrefill(in.q, in.k, in.v, in.types, c.window);
  ExpectClose(got, DenseCausalAttention(in.q, in.k, in.v), 1e-12, 1e-12, "all-global vs dense");
}

TEST(FusedAttention, SparsePrefillMatchesReferenceForward) {
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  int seed = 400;
  for (Mix mix : {Mix::kLearned, Mix::kUniform, Mix::kAllSliding, Mix::kLongLocal, Mix::kAllLocal}) {
    for (int64_t window : {0, 5, 64, 1000}) {
      const Case c{1, 4, 2, 300, 32, window, mix, true};
      const Inputs in = RandomInputs(c, seed++, torch::kFloat);
      const at::Tensor want = NatsReferenceForward(in.q.to(torch::kDouble), in.k.to(torch::kDouble),
                                                   in.v.to(torch::kDouble), in.types, window, false)
                                  .out;
      const at::Tensor got = NatsSparsePrefill(in.q, in.k, in.v, in.types, window);
      EXPECT_EQ(got.scalar_type(), torch::kFloat);
      ExpectClose(got, want, 1e-5, 1e-6, Describe(c, seed) + " prefill");
    }
  }
  at::set_num_threads(saved);
}

// Attention() with autograd on fresh leaves of `in`, loss sum(out * dout): {out, dq, dk, dv, dtypes}.
std::vector<at::Tensor> RunAutograd(const Inputs& in, const AttentionOptions& options) {
  at::Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true),
             v = in.v.clone().requires_grad_(true);
  at::Tensor onehot = torch::one_hot(in.types.to(torch::kLong), 3).to(torch::kDouble).requires_grad_(true);
  at::Tensor out = Attention(q, k, v, onehot, options);
  (out * in.dout).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad(), onehot.grad()};
}

// Through the public entry point with autograd: impl kFused vs kReference, gradients via .backward().
TEST(FusedAttention, AutogradEntryPointMatchesReference) {
  const Case c{2, 4, 2, 140, 16, 6, Mix::kUniform, true};
  for (MaskGradMode mode : {MaskGradMode::kExact, MaskGradMode::kClipped, MaskGradMode::kUnmasked}) {
    const Inputs in = RandomInputs(c, 500 + static_cast<int>(mode), torch::kDouble);
    std::vector<std::vector<at::Tensor>> results;
    for (AttentionImpl impl : {AttentionImpl::kReference, AttentionImpl::kFused}) {
      AttentionOptions options;
      options.window = c.window;
      options.lambda = 1e-3;
      options.grad_mode = mode;
      options.impl = impl;
      results.push_back(RunAutograd(in, options));
    }
    const std::string what = "autograd mode " + std::to_string(static_cast<int>(mode));
    const char* names[] = {"out", "dq", "dk", "dv", "dtypes"};
    for (int x = 0; x < 5; ++x)
      ExpectClose(results[1][x], results[0][x], 1e-10, 1e-11, what + " " + names[x]);
  }
}

TEST(FusedAttention, NoGradForwardUsesPrefillAndMatches) {
  const Case c{1, 2, 1, 100, 8, 4, Mix::kLearned, true};
  const Inputs in = RandomInputs(c, 600, torch::kDouble);
  at::Tensor onehot = torch::one_hot(in.types.to(torch::kLong), 3).to(torch::kDouble);
  AttentionOptions options;
  options.window = c.window;
  options.impl = AttentionImpl::kFused;
  at::Tensor got;
  {
    torch::NoGradGuard no_grad;
    got = Attention(in.q.requires_grad_(true), in.k, in.v, onehot, options);
  }
  EXPECT_FALSE(got.requires_grad());
  ExpectClose(got, NatsReferenceForward(in.q.detach(), in.k, in.v, in.types, c.window, false).out, 1e-12,
              1e-12, "no-grad forward");
}

TEST(FusedAttention, QueryBeginSkipsLeadingRowsWithoutChangingTheRest) {
  // A sequence-parallel prefix: rows before query_begin have zero queries and no output gradient. Skipping
  // their blocks must leave every other output and every gradient as the kernel computes them with
  // query_begin = 0.
  const Case c{1, 4, 2, 300, 8, 5, Mix::kUniform, true};
  for (int64_t query_begin : {64, 150, 299}) {
    Inputs in = RandomInputs(c, 700 + static_cast<int>(query_begin), torch::kDouble);
    in.q.narrow(2, 0, query_begin).zero_();
    in.dout.narrow(2, 0, query_begin).zero_();
    for (MaskGradMode mode : {MaskGradMode::kClipped, MaskGradMode::kExact, MaskGradMode::kUnmasked}) {
      std::vector<std::vector<at::Tensor>> results;
      for (int64_t begin : {int64_t{0}, query_begin}) {
        AttentionOptions options;
        options.window = c.window;
        options.lambda = 1e-3;
        options.grad_mode = mode;
        options.impl = AttentionImpl::kFused;
        options.query_begin = begin;
        results.push_back(RunAutograd(in, options));
        results.back()[0] = results.back()[0].narrow(2, query_begin, c.t - query_begin);
      }
      const char* names[] = {"out (rows >= query_begin)", "dq", "dk", "dv", "dtypes"};
      for (int x = 0; x < 5; ++x) {
        ExpectClose(results[1][x], results[0][x], 1e-12, 1e-13,
                    "query_begin " + std::to_string(query_begin) + " mode " +
                        std::to_string(static_cast<int>(mode)) + " " + names[x]);
      }
    }
  }
}

// Dense layers through the blocked kernel (Attention() with undefined types and impl kFused) against the
// matmul-softmax-matmul reference DenseCausalAttention: output and dq, dk, dv via autograd, GQA, T from 1 to
// past several blocks, 1 and 2 threads, double (tight) and float (realistic); and the no-grad path.
TEST(FusedAttention, DenseLayersThroughTheBlockedKernelMatchDenseCausal) {
  const int saved = at::get_num_threads();
  int seed = 800;
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const Case& c : {Case{1, 2, 1, 1, 8}, Case{2, 4, 2, 63, 16}, Case{1, 6, 2, 64, 16},
                          Case{2, 2, 2, 65, 8}, Case{1, 4, 1, 333, 32}}) {
      for (torch::Dtype dtype : {torch::kDouble, torch::kFloat}) {
        const Inputs in = RandomInputs(c, seed++, dtype);
        std::vector<std::vector<at::Tensor>> results;
        for (AttentionImpl impl : {AttentionImpl::kReference, AttentionImpl::kFused}) {
          at::Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true),
                     v = in.v.clone().requires_grad_(true);
          AttentionOptions options;
          options.impl = impl;
          at::Tensor out = Attention(q, k, v, at::Tensor(), options);
          (out * in.dout).sum().backward();
          results.push_back({out.detach(), q.grad(), k.grad(), v.grad()});
        }
        const bool tight = dtype == torch::kDouble;
        const std::string what =
            Describe(c, seed) + (tight ? " double" : " float") + " threads " + std::to_string(threads);
        const char* names[] = {"out", "dq", "dk", "dv"};
        for (int x = 0; x < 4; ++x) {
          ExpectClose(results[1][x], results[0][x], tight ? 1e-11 : 2e-5, tight ? 1e-12 : 2e-6,
                      what + " " + names[x]);
        }
        torch::NoGradGuard no_grad;
        AttentionOptions fused;
        fused.impl = AttentionImpl::kFused;
        ExpectClose(Attention(in.q, in.k, in.v, at::Tensor(), fused), results[0][0], tight ? 1e-11 : 2e-5,
                    tight ? 1e-12 : 2e-6, what + " no-grad out");
      }
    }
  }
  at::set_num_threads(saved);
}

// The executed-FLOP counter (nats/executed_flops.h): a dense forward through the blocked kernel runs the
// causal tiles only, i.e. about half of the reference's T x T products; a NAtS forward with few globals and a
// short window runs far fewer; the reference dense path counts exactly 2 x 2 B H T^2 D.
TEST(FusedAttention, CountsExecutedFlops) {
  const Case c{1, 2, 1, 512, 16, 8, Mix::kLearned, true};
  const Inputs in = RandomInputs(c, 900, torch::kFloat);
  torch::NoGradGuard no_grad;
  AttentionOptions options;
  TakeExecutedAttentionFlops();
  options.impl = AttentionImpl::kReference;
  Attention(in.q, in.k, in.v, at::Tensor(), options);
  const int64_t reference = TakeExecutedAttentionFlops();
  EXPECT_EQ(reference, 2 * 2 * c.b * c.h * c.t * c.t * c.d);
  options.impl = AttentionImpl::kFused;
  Attention(in.q, in.k, in.v, at::Tensor(), options);
  const int64_t blocked = TakeExecutedAttentionFlops();
  // 8 query blocks of 64: block i visits i + 1 key chunks, so 36 of the 64 tiles.
  EXPECT_EQ(blocked, reference * 36 / 64);
  at::Tensor onehot = torch::one_hot(in.types.to(torch::kLong), 3).to(torch::kFloat);
  options.window = c.window;
  Attention(in.q, in.k, in.v, onehot, options);
  const int64_t sparse = TakeExecutedAttentionFlops();
  EXPECT_GT(sparse, 0);
  EXPECT_LT(sparse, blocked / 2) << "a learned-looking type mix should skip most key tiles";
}

TEST(FusedAttention, RejectsSoftTypes) {
  const Case c{1, 2, 1, 10, 4, 2, Mix::kUniform, true};
  const Inputs in = RandomInputs(c, 700, torch::kFloat);
  at::Tensor soft = torch::full({1, 1, 10, 3}, 1.0 / 3.0);
  AttentionOptions options;
  options.impl = AttentionImpl::kFused;
  EXPECT_THROW(Attention(in.q, in.k, in.v, soft, options), c10::Error);
}

}  // namespace
}  // namespace nats
