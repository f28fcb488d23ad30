// interop/hf_weights.h
//
// Tensor names and layouts between our Transformer (nats/transformer.h) and a Hugging Face family
// (interop/hf_config.h). GPT-2 stores its projections as Conv1D ([in, out], the transpose of a Linear) and
// q/k/v fused in c_attn; Llama stores q/k/v separately ([out, in]) and needs no permutation, because Hugging
// Face's rotate-half RoPE is the halves convention nats::ApplyRope uses. NAtS scorers, which no Hugging Face
// model has, travel as extra tensors "<layer prefix>.nats_scorer.weight" (docs/interop.md).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "interop/hf_config.h"
#include "interop/safetensors.h"
#include "runtime/config.pb.h"

namespace nats::interop {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Our parameters (Transformer::named_parameters() names, float32) read from `weights`. Every tensor of the
// file must be used, except buffers Hugging Face sometimes stores (GPT-2's attn.bias / attn.masked_bias
// masks, rotary_emb.inv_freq) and a tied head's copy of the embeddings; a leftover or missing tensor is an
// error naming it and the file.
absl::StatusOr<NamedTensors> ImportWeights(const config::Config& config, HfFamily family,
                                           const SafetensorsCheckpoint& weights);

// The Hugging Face tensors of our parameters `ours` (named as Transformer::named_parameters()), in `family`'s
// names and layouts, in the order a Hugging Face save lists them.
absl::StatusOr<NamedTensors> ExportWeights(const config::Config& config, HfFamily family,
                                           const NamedTensors& ours);

}  // namespace nats::interop
