// Tests of the reference NAtS attention, nats/nats_attention.cpp (docs/method.md sections 4, 5, 9): forward
// and q/k/v gradients vs a plain masked softmax; the type gradient (mode exact) vs LibTorch autograd of the
// product form of the mask with float one-hots; the collected term, the regulariser, and the clipped /
// unmasked modes vs their formulas; all-global vs dense causal attention.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "nats/attention.h"
#include "nats/masks.h"
#include "nats/nats_attention_reference.h"
#include "nats/token_type.h"

namespace nats {
namespace {

constexpr int64_t kG = static_cast<int64_t>(TokenType::kGlobal);
constexpr int64_t kL = static_cast<int64_t>(TokenType::kLocal);
constexpr int64_t kS = static_cast<int64_t>(TokenType::kSliding);

struct Case {
  int64_t b = 2, h = 2, h_kv = 2, t = 9, d = 8, window = 2;
  bool force_ends = true;
};

std::string Describe(const Case& c, int seed) {
  return "seed " + std::to_string(seed) + " B" + std::to_string(c.b) + " H" + std::to_string(c.h) + " Hkv" +
         std::to_string(c.h_kv) + " T" + std::to_string(c.t) + " W" + std::to_string(c.window) +
         (c.force_ends ? " forced" : "");
}

struct Inputs {
  at::Tensor q, k, v, dout;
  at::Tensor types;   // int8 [B, H_kv, T]
  at::Tensor onehot;  // double [B, H_kv, T, 3]
};

Inputs RandomInputs(const Case& c, int seed, torch::Dtype dtype = torch::kDouble) {
  torch::manual_seed(seed);
  Inputs in;
  const auto opts = torch::TensorOptions().dtype(dtype);
  in.q = torch::randn({c.b, c.h, c.t, c.d}, opts);
  in.k = torch::randn({c.b, c.h_kv, c.t, c.d}, opts);
  in.v = torch::randn({c.b, c.h_kv, c.t, c.d}, opts);
  in.dout = torch::randn({c.b, c.h, c.t, c.d}, opts);
  at::Tensor types = torch::randint(0, 3, {c.b, c.h_kv, c.t}, torch::kLong);
  if (seed % 5 == 4)
    types = torch::where(torch::rand({c.b, c.h_kv, c.t}) < 0.1, torch::full({}, kG, torch::kLong),
                         torch::full({}, kL, torch::kLong));  // long local segments
  if (c.force_ends) {
    types.select(-1, 0).fill_(kG);
    types.select(-1, c.t - 1).fill_(kG);
  }
  in.types = types.to(torch::kChar);
  in.onehot = torch::one_hot(types, 3).to(dtype);
  return in;
}

// M_ij = g_j + l_j * prod_{k=j+1}^{i-1} (1 - g_k) + s_j [i - j <= W] for j <= i, 0 above the diagonal, built
// from differentiable float one-hots [B, H_kv, T, 3] with explicit loops: independent of nats/masks.
at::Tensor ProductFormMask(const at::Tensor& y, int64_t window) {
  const int64_t t = y.size(2);
  at::Tensor g = y.select(-1, kG), l = y.select(-1, kL), s = y.select(-1, kS);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < t; ++i) {
    std::vector<at::Tensor> row;
    for (int64_t j = 0; j < t; ++j) {
      if (j > i) {
        row.push_back(torch::zeros_like(g.select(-1, 0)));
        continue;
      }
      at::Tensor prod = torch::ones_like(g.select(-1, 0));
      for (int64_t k = j + 1; k <= i - 1; ++k) prod = prod * (1 - g.select(-1, k));
      at::Tensor m = g.select(-1, j) + l.select(-1, j) * prod;
      if (i - j <= window) m = m + s.select(-1, j);
      row.push_back(m);
    }
    rows.push_back(torch::stack(row, -1));
  }
  return torch::stack(rows, -2);  // [B, H_kv, T, T]
}

// O_i = sum_j M_ij exp(a_ij) v_j / sum_j M_ij exp(a_ij) with a multiplicative (float) mask; GQA by repeat.
at::Tensor MultiplicativeMaskAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& m) {
  const int64_t n_rep = q.size(1) / k.size(1), t = q.size(2);
  at::Tensor kk = k.repeat_interleave(n_rep, 1), vv = v.repeat_interleave(n_rep, 1);
  at::Tensor mm = m.repeat_interleave(n_rep, 1);
  at::Tensor a = torch::matmul(q, kk.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(3)));
  at::Tensor causal = torch::ones({t, t}, torch::kBool).tril();
  at::Tensor row_max = std::get<0>(a.masked_fill(causal.logical_not(), -1e300).max(-1, true)).detach();
  at::Tensor w = mm * (a - row_max).exp().masked_fill(causal.logical_not(), 0.0);
  return torch::matmul(w, vv) / w.sum(-1, true);
}

// Plain masked softmax attention with a boolean mask (additive -inf), for q/k/v gradients.
at::Tensor PlainMaskedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& mask) {
  const int64_t n_rep = q.size(1) / k.size(1);
  at::Tensor kk = k.repeat_interleave(n_rep, 1), vv = v.repeat_interleave(n_rep, 1);
  at::Tensor a = torch::matmul(q, kk.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(3)));
  a = a.masked_fill(mask.repeat_interleave(n_rep, 1).logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(a, -1), vv);
}

// docs/method.md 5.3 as scalar loops over a mask gradient G [B, H_kv, T, T] (already summed over query
// heads).
at::Tensor BruteForceTypeGradient(const at::Tensor& mask_grad, const at::Tensor& types, int64_t window) {
  const int64_t b = types.size(0), h = types.size(1), t = types.size(2);
  at::Tensor out = torch::zeros({b, h, t, 3}, torch::kDouble);
  at::Tensor gd = mask_grad.to(torch::kDouble).contiguous();
  auto G = gd.accessor<double, 4>();
  auto o = out.accessor<double, 4>();
  at::Tensor tl = types.to(torch::kLong).contiguous();
  auto ty = tl.accessor<int64_t, 3>();
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < h; ++hi) {
      for (int64_t j = 0; j < t; ++j) {
        int64_t f = t - 1, p = -1;
        for (int64_t k = j + 1; k < t; ++k)
          if (ty[bi][hi][k] == kG) {
            f = k;
            break;
          }
        for (int64_t k = j - 1; k >= 0; --k)
          if (ty[bi][hi][k] == kG) {
            p = k;
            break;
          }
        double ds = 0, dl = 0, dg = 0, collected = 0;
        for (int64_t i = j; i <= std::min(t - 1, j + window); ++i) ds += G[bi][hi][i][j];
        for (int64_t i = j; i <= f; ++i) dl += G[bi][hi][i][j];
        for (int64_t i = j; i < t; ++i) dg += G[bi][hi][i][j];
        for (int64_t k = p + 1; k < j; ++k) {
          if (ty[bi][hi][k] != kL) continue;
          for (int64_t i = j + 1; i <= f; ++i) collected += G[bi][hi][i][k];
        }
        o[bi][hi][j][kG] = dg - collected;
        o[bi][hi][j][kL] = dl;
        o[bi][hi][j][kS] = ds;
      }
    }
  }
  return out;
}

void ExpectClose(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                 const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double err = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
  const double scale = want.to(torch::kDouble).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(got.to(torch::kDouble), want.to(torch::kDouble), rtol, atol))
      << what << ": max abs error " << err << " (max |want| " << scale << ")";
}

struct Grads {
  at::Tensor out, dq, dk, dv, dtypes;
};

Grads RunNats(const Inputs& in, const AttentionOptions& options) {
  at::Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true);
  at::Tensor v = in.v.clone().requires_grad_(true), y = in.onehot.clone().requires_grad_(true);
  at::Tensor out = NatsAttention(q, k, v, y, options);
  auto g = torch::autograd::grad({out}, {q, k, v, y}, {in.dout});
  return {out.detach(), g[0], g[1], g[2], g[3]};
}

std::vector<Case> GradientCases() {
  std::vector<Case> cases;
  int n = 0;
  for (int64_t t : {1, 2, 5, 9, 13, 17}) {
    for (int64_t window : {int64_t{1}, int64_t{3}, int64_t{16}, t}) {
      Case c;
      c.t = t;
      c.window = window;
      c.h = (n % 2 == 0) ? 4 : 2;  // GQA n_rep 2 and plain MHA
      c.h_kv = 2;
      c.b = 1 + n % 2;
      c.d = 4 + 4 * (n % 2);
      c.force_ends = n % 3 != 0;
      cases.push_back(c);
      ++n;
    }
  }
  return cases;
}

TEST(NatsAttention, ExactTypeGradientMatchesAutogradOfProductForm) {
  AttentionOptions options;
  options.grad_mode = MaskGradMode::kExact;
  options.lambda = 0.0;
  int seed = 0;
  for (const Case& c : GradientCases()) {
    for (int rep = 0; rep < 2; ++rep, ++seed) {
      SCOPED_TRACE(Describe(c, seed));
      const Inputs in = RandomInputs(c, seed);
      options.window = c.window;
      const Grads got = RunNats(in, options);

      at::Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true);
      at::Tensor v = in.v.clone().requires_grad_(true), y = in.onehot.clone().requires_grad_(true);
      at::Tensor out = MultiplicativeMaskAttention(q, k, v, ProductFormMask(y, c.window));
      auto want = torch::autograd::grad({out}, {q, k, v, y}, {in.dout});

      ExpectClose(got.out, out.detach(), 1e-10, 1e-12, "output");
      ExpectClose(got.dq, want[0], 1e-9, 1e-11, "dq");
      ExpectClose(got.dk, want[1], 1e-9, 1e-11, "dk");
      ExpectClose(got.dv, want[2], 1e-9, 1e-11, "dv");
      ExpectClose(got.dtypes, want[3], 1e-8, 1e-10, "dtypes");
    }
  }
}

// The sums of 5.3 on their own: vs a scalar-loop transcription and vs autograd of sum_ij G_ij M_ij.
TEST(NatsAttention, TypeGradientSumsMatchScalarLoopsAndAutograd) {
  for (int seed = 0; seed < 24; ++seed) {
    Case c;
    c.t = 1 + (seed * 5) % 19;
    c.window = std::vector<int64_t>{1, 3, 16, c.t}[seed % 4];
    c.force_ends = seed % 3 != 0;
    const Inputs in = RandomInputs(c, seed);
    SCOPED_TRACE(Describe(c, seed));
    at::Tensor g = torch::randn({c.b, c.h_kv, c.t, c.t}, torch::kDouble).tril();
    const at::Tensor got = TypeGradientFromMaskGradient(g, in.types, c.window);
    ExpectClose(got, BruteForceTypeGradient(g, in.types, c.window), 1e-12, 1e-12, "vs scalar loops");
    at::Tensor y = in.onehot.clone().requires_grad_(true);
    at::Tensor want = torch::autograd::grad({(ProductFormMask(y, c.window) * g).sum()}, {y})[0];
    ExpectClose(got, want, 1e-12, 1e-12, "vs autograd");
  }
}

// With every local segment closed by a global, the collected term is what separates dL/dg from a plain
// column sum; a focused case: types G L L G L G, rows j+1..f_j of the locals 1, 2 are charged to g_3.
TEST(NatsAttention, CollectedTermOnHandCase) {
  at::Tensor types = torch::tensor({kG, kL, kL, kG, kL, kG}, torch::kLong).view({1, 1, 6}).to(torch::kChar);
  at::Tensor g = torch::zeros({1, 1, 6, 6}, torch::kDouble);
  g[0][0][4][1] = 1.0;    // row 4, local key 1: inside rows 4..5 after global 3 -> C_3
  g[0][0][5][2] = 10.0;   // row 5, local key 2: also C_3 (f_3 = 5)
  g[0][0][3][1] = 100.0;  // row 3 = j itself: not in C_3 (rows start at j+1)
  at::Tensor d = TypeGradientFromMaskGradient(g, types, /*window=*/1);
  // j = 3 (global): column 3 of G is zero; C_3 = G[4][1] + G[5][2] (locals 1, 2; rows 4..f_3 = 5).
  EXPECT_DOUBLE_EQ(d[0][0][3][kG].item<double>(), -11.0);
  // j = 2 (local): making it global would cut local 1 off for row 3 = f_2: C_2 = G[3][1].
  EXPECT_DOUBLE_EQ(d[0][0][2][kG].item<double>(), 10.0 - 100.0);
  EXPECT_DOUBLE_EQ(d[0][0][2][kL].item<double>(), 0.0);  // rows 2..3 of column 2
  // j = 1: no local before it in its segment; dl sums rows 1..3, ds rows 1..2.
  EXPECT_DOUBLE_EQ(d[0][0][1][kG].item<double>(), 101.0);
  EXPECT_DOUBLE_EQ(d[0][0][1][kL].item<double>(), 100.0);
  EXPECT_DOUBLE_EQ(d[0][0][1][kS].item<double>(), 0.0);
}

TEST(NatsAttention, QkvGradientsMatchPlainMaskedSoftmax) {
  int seed = 100;
  for (const Case& c : GradientCases()) {
    for (MaskGradMode mode : {MaskGradMode::kClipped, MaskGradMode::kUnmasked}) {
      SCOPED_TRACE(Describe(c, seed));
      const Inputs in = RandomInputs(c, seed++);
      AttentionOptions options;
      options.window = c.window;
      options.grad_mode = mode;
      options.lambda = 1e-3;  // touches the type gradient only
      const Grads got = RunNats(in, options);
      at::Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true);
      at::Tensor v = in.v.clone().requires_grad_(true);
      at::Tensor out = PlainMaskedAttention(
          q, k, v, DenseMask(in.types, c.window) /* tested vs brute force in masks_test */);
      auto want = torch::autograd::grad({out}, {q, k, v}, {in.dout});
      ExpectClose(got.out, out.detach(), 1e-10, 1e-12, "output");
      ExpectClose(got.dq, want[0], 1e-9, 1e-11, "dq");
      ExpectClose(got.dk, want[1], 1e-9, 1e-11, "dk");
      ExpectClose(got.dv, want[2], 1e-9, 1e-11, "dv");
    }
  }
}

// docs/method.md 5.4 by hand on the worked example of section 3 (G L S L L G S L G, e = 0,5,5,5,5,5,8,8,8),
// n_rep 2.
TEST(NatsAttention, RegulariserMatchesHandValues) {
  Case c;
  c.b = 1;
  c.h = 2;
  c.h_kv = 1;
  c.t = 9;
  c.window = 2;
  c.d = 4;
  Inputs in = RandomInputs(c, 3);
  const std::vector<int64_t> letters = {kG, kL, kS, kL, kL, kG, kS, kL, kG};
  at::Tensor types = torch::tensor(letters, torch::kLong).view({1, 1, 9});
  in.types = types.to(torch::kChar);
  in.onehot = torch::one_hot(types, 3).to(torch::kDouble);
  const double lambda = 1e-3;
  at::Tensor want = torch::zeros({1, 1, 9, 3}, torch::kDouble);
  const double unit = lambda * 2 / 9.0;
  for (auto [j, rows] : std::vector<std::pair<int, double>>{{0, 9}, {5, 4}, {8, 1}})
    want[0][0][j][kG] = unit * rows;
  for (auto [j, rows] : std::vector<std::pair<int, double>>{{1, 4}, {3, 2}, {4, 1}, {7, 1}})
    want[0][0][j][kL] = unit * rows;
  ExpectClose(SparsityRegulariserGradient(in.types, lambda, /*n_rep=*/2), want, 1e-15, 0, "regulariser");

  for (MaskGradMode mode : {MaskGradMode::kClipped, MaskGradMode::kExact, MaskGradMode::kUnmasked}) {
    AttentionOptions options;
    options.window = 2;
    options.grad_mode = mode;
    const Grads off = RunNats(in, options);
    options.lambda = lambda;
    const Grads on = RunNats(in, options);
    ExpectClose(on.dtypes - off.dtypes, want, 1e-9, 1e-14, "regulariser through the attention");
    ExpectClose(on.dq, off.dq, 0, 0, "dq does not see lambda");
  }
}

// q = k with equal row norms makes a_ij <= a_ii for every j, so every exp(a_ij)/Z^M_i <= 1 (the diagonal is
// in Z^M): clipping changes nothing and clipped == exact. With random q, k some masked ratios exceed 1 and
// the two modes differ, which shows the comparison can fail.
TEST(NatsAttention, ClippedEqualsExactWhenNoMaskedRatioExceedsOne) {
  int differing = 0;
  for (int seed = 0; seed < 12; ++seed) {
    Case c;
    c.h = 2;
    c.h_kv = 2;
    c.t = 13;
    c.d = 8;
    c.window = 1 + seed % 4;
    Inputs in = RandomInputs(c, 200 + seed);
    at::Tensor unit = in.k / in.k.norm(2, -1, true);
    AttentionOptions options;
    options.window = c.window;
    options.lambda = 1e-4;
    {
      Inputs bounded = in;
      bounded.k = 4.0 * unit;
      bounded.q = 4.0 * unit;
      {  // the premise: exp(a_ij) / Z^M_i <= 1 on every causal pair
        const NatsReferenceForwardResult fwd = NatsReferenceForward(
            bounded.q, bounded.k, bounded.v, bounded.types, c.window, /*keep_full_lse=*/false);
        at::Tensor a = torch::matmul(bounded.q, bounded.k.transpose(-2, -1)) / std::sqrt(8.0);
        at::Tensor ratio = (a - fwd.lse_masked.unsqueeze(-1)).exp().tril();
        ASSERT_LE(ratio.max().item<double>(), 1.0 + 1e-12);
      }
      options.grad_mode = MaskGradMode::kExact;
      const Grads exact = RunNats(bounded, options);
      options.grad_mode = MaskGradMode::kClipped;
      const Grads clipped = RunNats(bounded, options);
      ExpectClose(clipped.dtypes, exact.dtypes, 1e-12, 1e-14, "clipped vs exact, bounded ratios");
    }
    {
      in.q = 3.0 * in.q;  // large logits: some masked key outscores every visible one
      options.grad_mode = MaskGradMode::kExact;
      const Grads exact = RunNats(in, options);
      options.grad_mode = MaskGradMode::kClipped;
      const Grads clipped = RunNats(in, options);
      if (!torch::allclose(clipped.dtypes, exact.dtypes, 1e-6, 1e-9)) ++differing;
    }
  }
  EXPECT_GT(differing, 6);
}

// docs/method.md 5.2 `unmasked`: G_ij = exp(a_ij) / Z^F_i (dP_ij - Delta_i) with Z^F the causal (unmasked)
// sum, written out with scalar loops on a small case and pushed through the scalar 5.3 sums.
TEST(NatsAttention, UnmaskedModeMatchesItsFormula) {
  for (int seed = 0; seed < 4; ++seed) {
    Case c;
    c.b = 1;
    c.h = 4;
    c.h_kv = 2;
    c.t = 7;
    c.d = 3;
    c.window = 2;
    c.force_ends = seed % 2 == 0;
    const Inputs in = RandomInputs(c, 300 + seed);
    AttentionOptions options;
    options.window = c.window;
    options.grad_mode = MaskGradMode::kUnmasked;
    const Grads got = RunNats(in, options);
    const int64_t n_rep = c.h / c.h_kv;
    const at::Tensor mask = DenseMask(in.types, c.window);
    at::Tensor g = torch::zeros({1, c.h_kv, c.t, c.t}, torch::kDouble);
    for (int64_t h = 0; h < c.h; ++h) {
      const int64_t hk = h / n_rep;
      for (int64_t i = 0; i < c.t; ++i) {
        std::vector<double> a(i + 1);
        double z_full = 0, z_masked = 0;
        at::Tensor o = torch::zeros({c.d}, torch::kDouble);
        for (int64_t j = 0; j <= i; ++j) {
          a[j] = (in.q[0][h][i] * in.k[0][hk][j]).sum().item<double>() / std::sqrt(3.0);
          z_full += std::exp(a[j]);
          if (mask[0][hk][i][j].item<bool>()) z_masked += std::exp(a[j]);
        }
        for (int64_t j = 0; j <= i; ++j)
          if (mask[0][hk][i][j].item<bool>()) o += std::exp(a[j]) / z_masked * in.v[0][hk][j];
        const double delta = (in.dout[0][h][i] * o).sum().item<double>();
        for (int64_t j = 0; j <= i; ++j) {
          const double dp = (in.dout[0][h][i] * in.v[0][hk][j]).sum().item<double>();
          g[0][hk][i][j] += std::exp(a[j]) / z_full * (dp - delta);
        }
      }
    }
    ExpectClose(got.dtypes, BruteForceTypeGradient(g, in.types, c.window), 1e-10, 1e-12, "unmasked");
  }
}

// Dense causal attention is the special case "every token global" (docs/method.md 3).
TEST(NatsAttention, AllGlobalEqualsDenseCausalAttention) {
  for (torch::Dtype dtype : {torch::kFloat, torch::kDouble}) {
    for (int seed = 0; seed < 4; ++seed) {
      Case c;
      c.b = 2;
      c.h = 4;
      c.h_kv = seed % 2 == 0 ? 2 : 4;
      c.t = 11 + seed;
      c.d = 16;
      c.window = 1;
      Inputs in = RandomInputs(c, 400 + seed, dtype);
      in.onehot = torch::zeros({c.b, c.h_kv, c.t, 3}, dtype);
      in.onehot.select(-1, kG).fill_(1.0);
      AttentionOptions options;
      options.window = c.window;
      const Grads got = RunNats(in, options);
      at::Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true);
      at::Tensor v = in.v.clone().requires_grad_(true);
      at::Tensor out = DenseCausalAttention(q, k, v);
      auto want = torch::autograd::grad({out}, {q, k, v}, {in.dout});
      const double tol = dtype == torch::kDouble ? 1e-12 : 1e-5;
      ExpectClose(got.out, out.detach(), tol, tol, "output");
      ExpectClose(got.dq, want[0], tol, tol, "dq");
      ExpectClose(got.dk, want[1], tol, tol, "dk");
      ExpectClose(got.dv, want[2], tol, tol, "dv");
      // Through the entry point with undefined types: the dense path itself.
      EXPECT_TRUE(torch::equal(Attention(in.q, in.k, in.v, at::Tensor(), options),
                               DenseCausalAttention(in.q, in.k, in.v)));
    }
  }
}

TEST(NatsAttention, FloatInputsAndTypesWithoutGradient) {
  Case c;
  c.h = 4;
  c.h_kv = 2;
  c.t = 10;
  c.d = 8;
  c.window = 3;
  const Inputs in = RandomInputs(c, 500, torch::kFloat);
  Inputs in64 = in;
  for (at::Tensor* x : {&in64.q, &in64.k, &in64.v, &in64.dout, &in64.onehot}) *x = x->to(torch::kDouble);
  AttentionOptions options;
  options.window = c.window;
  at::Tensor q = in.q.clone().requires_grad_(true);
  at::Tensor out = NatsAttention(q, in.k, in.v, in.onehot, options);  // types do not require grad
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  out.backward(in.dout);
  ASSERT_TRUE(q.grad().defined());
  ExpectClose(q.grad(), RunNats(in64, options).dq, 1e-4, 1e-5, "float dq vs double");
  torch::NoGradGuard no_grad;
  ExpectClose(NatsAttention(in.q, in.k, in.v, in.onehot, options), out.detach(), 0, 0, "no-grad forward");
}

TEST(NatsAttention, RejectsBadTypes) {
  Case c;
  const Inputs in = RandomInputs(c, 600);
  AttentionOptions options;
  EXPECT_THROW(NatsAttention(in.q, in.k, in.v, in.onehot * 0.5, options), c10::Error);  // not one-hot
  EXPECT_THROW(NatsAttention(in.q, in.k, in.v, in.onehot.narrow(2, 0, 4), options), c10::Error);  // wrong T
  options.impl = AttentionImpl::kFused;  // the fused kernel validates its input the same way
  EXPECT_THROW(NatsAttention(in.q, in.k, in.v, in.onehot * 0.5, options), c10::Error);
  EXPECT_THROW(NatsAttention(in.q, in.k, in.v, in.onehot.narrow(2, 0, 4), options), c10::Error);
}

}  // namespace
}  // namespace nats
