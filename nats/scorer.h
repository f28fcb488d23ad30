// nats/scorer.h
//
// The token-type predictor of Neural Attention Search (docs/method.md section 2): one bias-free linear layer
// d_model -> H_kv * 3 per attention layer, init N(0, 0.02).
// - Training: hard straight-through Gumbel-softmax with temperature tau on the DETACHED input. The forward
//   value is exactly one-hot; the backward goes through softmax((logits + gumbel) / tau), so with
//   dL/dy from the attention, dL/dlogit_o = ysoft_o * (dL/dy_o - sum_o' ysoft_o' dL/dy_o') / tau
//   (docs/method.md 5.3). Positions 0 and N-1 of the training sequence are forced global and get zero
//   gradient.
// - Inference: argmax of logits + global_bias on the global option; position 0 (of the sequence) forced
//   global. No sampling.
// The Gumbel noise is counter-based when a NoiseKey is given (nats/gumbel_noise.h; what the trainer uses): a
// pure function of (seed, layer, sample, head, position), the same however the batch is split over ranks,
// chunks and micro-batches. Without a key it comes from the global torch generator (torch::manual_seed makes
// it reproducible), drawn for the whole sequence of total_len positions and cut to the chunk, so ranks that
// share a sequence and a generator state still sample what a single rank would.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "nats/gumbel_noise.h"

namespace nats {

struct ScorerOutput {
  at::Tensor
      onehot;  // [B, H_kv, T, 3] float, exactly one-hot; carries the straight-through gradient in training
  at::Tensor types;   // [B, H_kv, T] int8 TokenType values (argmax of onehot)
  at::Tensor logits;  // [B, H_kv, T, 3] raw scorer logits (in the graph; tests take gradients w.r.t. them)
  at::Tensor soft;    // training only: softmax((logits + gumbel) / tau), detached; undefined at inference
  // The types inference would give these logits ([B, H_kv, T] int8: argmax + global bias, no noise, position
  // 0 global): what a KV cache keeps, which the KV-fraction controller holds at its target. Equal to `types`
  // at inference.
  at::Tensor inference_types;
};

class ScorerImpl : public torch::nn::Module {
 public:
  ScorerImpl(int64_t d_model, int64_t n_kv_head);

  // x_normed: [B, T, d_model], the normalised hidden state that feeds Q/K/V (detached here).
  // start_pos: sequence position of x_normed[:, 0]; at inference only a chunk starting at 0 forces its first
  // token global (a decode step continuing a sequence must not).
  // total_len (training): length N of the whole sequence this chunk belongs to; 0 means start_pos + T. The
  // chunk forces position 0 and N-1 global where it holds them.
  // noise (training): the counter-based source and this scorer's layer index; nullptr: the torch generator.
  ScorerOutput Forward(const at::Tensor& x_normed, bool training, double tau = 1.0, double global_bias = 0.1,
                       int64_t start_pos = 0, int64_t total_len = 0, const NoiseKey* noise = nullptr,
                       int64_t layer = 0);

  int64_t n_kv_head() const { return n_kv_head_; }
  const torch::nn::Linear& proj() const { return proj_; }

 private:
  int64_t n_kv_head_;
  torch::nn::Linear proj_{nullptr};
};
TORCH_MODULE(Scorer);

}  // namespace nats
