// nats/cuda/device_attention.h
//
// The row-wise NAtS attention kernels (nats/cuda/nats_rows.h) behind the fused kernel's contract
// (nats/fused_attention.h): FusedNatsForward and FusedNatsBackward run these for CUDA tensors. Same inputs,
// outputs and semantics (docs/method.md 3-5: masked forward with its lse, dq/dk/dv, the exact type gradients
// in the three grad modes, the regulariser, GQA without repeated K/V, query_begin).
// On CPU tensors the same kernel functions run in host loops: that is how the CPU test suite checks the GPU
// arithmetic against the reference (tests/nats/rowwise_attention_test.cpp); the CPU fast path stays
// nats/fused/. CUDA tensors need a build against a CUDA LibTorch (RowwiseKernelsOnCuda()).
// Computation in float32 on the GPU (bf16/fp16 inputs are converted, results returned in the input dtype; the
// lse and type gradient stay float32); float64 for double inputs on the host.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "nats/attention.h"
#include "nats/fused_attention.h"

namespace nats {

// True when this build can run the kernels on CUDA tensors (built against a CUDA LibTorch with nvcc).
bool RowwiseKernelsOnCuda();

FusedForwardResult RowwiseNatsForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& types, int64_t window, bool keep_lse,
                                      bool keep_full_lse, int64_t query_begin = 0);

FusedGradients RowwiseNatsBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& types, const FusedForwardResult& forward,
                                   const at::Tensor& dout, const AttentionOptions& options,
                                   bool need_type_grad);

}  // namespace nats
