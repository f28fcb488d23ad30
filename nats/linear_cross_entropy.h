// nats/linear_cross_entropy.h
//
// The language-model head and its loss in one step: mean cross-entropy of logits = x W^T against targets,
// without the [N, V] logits tensor (the idea of llm.c's fused classifier and of chunked / "cut"
// cross-entropy). Rows go in chunks: a chunk's logits come from one matmul into a reused buffer, become their
// own gradient, softmax - onehot, in place, and then their share of dx = G W and dW = G^T x at once, so the
// backward only scales the saved dx and dW by the incoming gradient. At GPT-2's vocabulary the head is most
// of a small model's step; a whole [N, 50304] tensor costs both DRAM passes and, freshly allocated each step,
// page faults (a fifth of configs/small's CPU time before this form). Without gradients (eval, no_grad)
// only the loss is computed.
//
// Values and gradients equal at::cross_entropy_loss(x W^T, targets) (mean reduction) to float rounding
// (tests/nats/linear_cross_entropy_test.cpp). x [N, d], weight [V, d], targets [N] int64 in [0, V).
//
// Paths with the same contract:
// - kHostRows (CPU tensors): 512-row chunks, one logits buffer per process reused across calls, and a
//   multiversioned row kernel (max; exp with its sum; scale and - onehot) run over the rows in parallel.
// - kChunked (any device; what CUDA tensors take): 1024-row chunks and the softmax as ATen ops; matmuls in
//   x's dtype (bf16 under autocast), the loss math and dW accumulation in fp32.
// - kWholeTensor: the reference: the gradient by whole-tensor ATen ops over all rows at once, one [N, V]
//   tensor kept for the backward.
// kAuto picks kHostRows on CPU and kChunked elsewhere; the tests run all three on the CPU against the unfused
// loss.
#pragma once

#include <ATen/core/Tensor.h>

namespace nats {

enum class LinearCrossEntropyPath { kAuto, kHostRows, kChunked, kWholeTensor };

at::Tensor LinearCrossEntropy(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& targets,
                              LinearCrossEntropyPath path = LinearCrossEntropyPath::kAuto);

}  // namespace nats
