// nats/linear_cross_entropy.h
//
// The language-model head and its loss in one step: mean cross-entropy of logits = x W^T against targets,
// without the [N, V] tensors an unfused loss keeps besides the logits (log-probabilities, the one-hot
// gradient, the softmax gradient). This is the idea of llm.c's fused classifier. The forward computes the
// logits with one matmul. It then turns each block of rows into its own gradient, softmax - onehot, in place
// while the block is in cache, and keeps only that buffer for the backward. The backward is two matmuls. At
// GPT-2's vocabulary the head is most of a small model's step, and the unfused loss makes several passes
// through DRAM over [N, 50304] floats.
//
// Values and gradients equal at::cross_entropy_loss(x W^T, targets) (mean reduction) to float rounding
// (tests/nats/linear_cross_entropy_test.cpp). x [N, d], weight [V, d], targets [N] int64 in [0, V).
//
// Three paths with the same contract. kRowBlocks (CPU tensors): the blocked host loop above. kChunked
// (tensors on any other device, e.g. CUDA): chunks of 1024 rows whose logits become their gradient, then
// their share of dx and dW, inside the forward; no [N, V] tensor ever exists, and the backward only scales
// the saved dx and dW by the incoming gradient (the idea of chunked / "cut" cross-entropy). kWholeTensor: the
// same gradient built by whole-tensor ATen ops over all rows at once (one [N, V] logits tensor kept for the
// backward). The loss math runs in fp32 when the logits come out of a bf16 autocast matmul. kAuto picks
// kRowBlocks on CPU and kChunked elsewhere; tests pick kChunked and kWholeTensor on the CPU to check them
// against the unfused loss.
#pragma once

#include <ATen/core/Tensor.h>

namespace nats {

enum class LinearCrossEntropyPath { kAuto, kRowBlocks, kChunked, kWholeTensor };

at::Tensor LinearCrossEntropy(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& targets,
                              LinearCrossEntropyPath path = LinearCrossEntropyPath::kAuto);

}  // namespace nats
