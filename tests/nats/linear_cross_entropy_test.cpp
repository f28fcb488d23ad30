// The fused head + loss (nats/linear_cross_entropy.h) against LibTorch's unfused at::cross_entropy_loss of
// the logits: loss, dL/dx and dL/dW, in double (tight) and float (realistic vocabulary), with a row count
// that is not a multiple of the block, 1 and 2 threads, and an upstream gradient other than 1. Also: the
// model's Loss() equals cross-entropy of its forward() logits, tied and untied.
#include "nats/linear_cross_entropy.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nats/transformer.h"

namespace nats {
namespace {

struct Result {
  double loss;
  at::Tensor dx, dw;
};

Result Run(bool fused, const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& t, double upstream,
           LinearCrossEntropyPath path = LinearCrossEntropyPath::kAuto) {
  at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
  at::Tensor loss = fused ? LinearCrossEntropy(x, w, t, path) : at::cross_entropy_loss(at::mm(x, w.t()), t);
  (loss * upstream).backward();
  return {loss.item<double>(), x.grad(), w.grad()};
}

void Compare(at::ScalarType dtype, int64_t n, int64_t d, int64_t v, double tol) {
  torch::manual_seed(n + d + v);
  at::Tensor x = torch::randn({n, d}, dtype), w = torch::randn({v, d}, dtype) * 0.3;
  at::Tensor t = torch::randint(0, v, {n}, at::kLong);
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    const Result want = Run(false, x, w, t, 0.7);
    // The host-rows path (CPU), the chunked path (what CUDA tensors take) and the whole-tensor path,
    // all here on CPU.
    for (LinearCrossEntropyPath path : {LinearCrossEntropyPath::kHostRows, LinearCrossEntropyPath::kChunked,
                                        LinearCrossEntropyPath::kWholeTensor}) {
      const Result got = Run(true, x, w, t, 0.7, path);
      const std::string where = absl::StrCat("threads ", threads, ", path ", static_cast<int>(path));
      EXPECT_NEAR(got.loss, want.loss, tol * std::abs(want.loss)) << where;
      EXPECT_LE((got.dx - want.dx).abs().max().item<double>(), tol * want.dx.abs().max().item<double>())
          << where;
      EXPECT_LE((got.dw - want.dw).abs().max().item<double>(), tol * want.dw.abs().max().item<double>())
          << where;
    }
  }
}

TEST(LinearCrossEntropy, MatchesUnfusedInDouble) { Compare(at::kDouble, 37, 16, 101, 1e-12); }

TEST(LinearCrossEntropy, MatchesUnfusedInFloatAtGpt2Vocabulary) { Compare(at::kFloat, 66, 32, 50304, 2e-5); }

// More rows than one chunk of the chunked path (1024), with a partial last chunk: the chunks' shares of dx
// and dW must add up exactly as the unchunked gradient.
TEST(LinearCrossEntropy, ChunkedPathAcrossSeveralChunks) { Compare(at::kDouble, 2500, 8, 37, 1e-12); }

// Eval and no_grad calls compute the loss only (no dx, dW): the same value, and no graph.
TEST(LinearCrossEntropy, WithoutGradientsComputesTheSameLoss) {
  torch::manual_seed(3);
  at::Tensor x = torch::randn({700, 24}).requires_grad_(),
             w = (torch::randn({2000, 24}) * 0.3).requires_grad_();
  at::Tensor t = torch::randint(0, 2000, {700}, at::kLong);
  for (LinearCrossEntropyPath path : {LinearCrossEntropyPath::kHostRows, LinearCrossEntropyPath::kChunked}) {
    const double with_grad = LinearCrossEntropy(x, w, t, path).item<double>();
    torch::NoGradGuard no_grad;
    at::Tensor loss = LinearCrossEntropy(x, w, t, path);
    EXPECT_FALSE(loss.requires_grad());
    EXPECT_EQ(loss.item<double>(), with_grad) << static_cast<int>(path);
  }
}

// The host path reuses one logits buffer per process; calls that overlap in time (here: threads) must each
// get their own, or one call's logits overwrite another's.
TEST(LinearCrossEntropy, ConcurrentCallsDoNotShareTheLogitsBuffer) {
  at::set_num_threads(1);
  torch::manual_seed(4);
  std::vector<at::Tensor> xs, ws, ts;
  std::vector<double> want;
  for (int i = 0; i < 4; ++i) {
    xs.push_back(torch::randn({1100, 16}));
    ws.push_back(torch::randn({3000, 16}) * (0.2 + 0.3 * i));
    ts.push_back(torch::randint(0, 3000, {1100}, at::kLong));
    want.push_back(LinearCrossEntropy(xs[i], ws[i], ts[i]).item<double>());
  }
  std::vector<double> got(4, 0.0);
  for (int round = 0; round < 5; ++round) {
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        torch::NoGradGuard no_grad;
        got[i] = LinearCrossEntropy(xs[i], ws[i], ts[i]).item<double>();
      });
    }
    for (auto& th : threads) th.join();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], want[i]) << "round " << round << ", call " << i;
  }
}

TEST(LinearCrossEntropy, RejectsTargetsOutsideTheVocabulary) {
  at::Tensor x = torch::randn({3, 4}), w = torch::randn({5, 4});
  EXPECT_THROW(LinearCrossEntropy(x, w, torch::tensor({0, 5, 1}, at::kLong)), c10::Error);
}

TEST(LinearCrossEntropy, ModelLossEqualsCrossEntropyOfItsLogits) {
  for (bool tied : {true, false}) {
    ModelSpec spec;
    spec.model.set_vocab_size(97);
    spec.model.set_n_layer(2);
    spec.model.set_n_head(2);
    spec.model.set_d_model(16);
    spec.model.set_context_length(20);
    spec.model.set_tie_embeddings(tied);
    spec.nats_layers = {false, false};
    torch::manual_seed(1);
    Transformer model(spec);
    model->to(at::kDouble);
    at::Tensor tokens = torch::randint(0, 97, {3, 21}, at::kLong);
    at::Tensor in = tokens.narrow(1, 0, 20), tg = tokens.narrow(1, 1, 20);
    at::Tensor fused = model->Loss(in, tg);
    fused.backward();
    std::vector<at::Tensor> fused_grads;
    for (const auto& p : model->parameters()) fused_grads.push_back(p.grad().clone());
    model->zero_grad();
    at::Tensor logits = model->forward(in);
    at::Tensor plain = at::cross_entropy_loss(logits.reshape({-1, 97}), tg.reshape({-1}));
    plain.backward();
    EXPECT_NEAR(fused.item<double>(), plain.item<double>(), 1e-12) << "tied " << tied;
    size_t i = 0;
    for (const auto& p : model->parameters()) {
      EXPECT_LE((p.grad() - fused_grads[i++]).abs().max().item<double>(), 1e-12) << "tied " << tied;
    }
  }
}

}  // namespace
}  // namespace nats
