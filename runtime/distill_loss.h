// runtime/distill_loss.h
//
// The post-training objective (NATS_SPEC 8, train.objective = DISTILL; docs/posttraining.md): the NAtS model
// (the student) learns to reproduce the same weights with dense attention (the teacher). Both are one
// Transformer: the teacher is its forward with SetDenseAttention(true), run first, without gradients; then
// the student's forward with gradients. The student runs last, so LastLayerStats / LastLayerTypes describe
// the student (a dense forward leaves them alone anyway).
//
//   loss = mean over [B, T, d_model] of (student - teacher)^2, final hidden states (after the last norm)
//        + kl_weight * mean over tokens of KL(teacher || student) of the next-token distributions (Head)
//
// `share` weights the chunk's means as the trainer's cross-entropy path does under sequence parallelism
// (chunk length x sp / sequence length): the average over the sp ranks is then the whole sequence's mean,
// and the gradients equal one rank's. Pass 1 without sequence parallelism.
#pragma once

#include <ATen/core/Tensor.h>

#include "nats/transformer.h"

namespace nats {

struct DistillLoss {
  at::Tensor loss;            // (mse + kl_weight * kl) * share, a scalar in the student's graph
  double mse = 0;             // the parts, each times share (so they average over ranks like the loss)
  double kl = 0;              // 0 when kl_weight is 0 (not computed)
  at::Tensor student_hidden;  // [B, T, d_model]: evaluation reads the student's logits from it (Head)
};

// tokens: [B, T] int64 input tokens of this rank's chunk (the trainer's inputs, no targets needed). The
// model's dense-attention flag is restored to false on return, also when a forward throws.
DistillLoss ComputeDistillLoss(Transformer& model, const at::Tensor& tokens, double share, double kl_weight);

}  // namespace nats
