// nats/transformer.h
//
// Decoder-only transformer (docs/architecture.md section 5, nats/): pre-norm blocks with LayerNorm or
// RMSNorm, RoPE (optionally rescaled) or learned absolute positions, GELU (exact or tanh) MLP or SwiGLU,
// optional biases, optional GQA, tied or untied embeddings (enough for the GPT-2 and Llama families,
// interop/), GPT-2 initialisation (N(0, init_std), residual output projections scaled by 1/sqrt(2 L)). Every
// attention layer goes through nats::Attention: dense layers pass no types (= every token global), NAtS
// layers pass the scorer's straight-through one-hot types.
//
// Forward(tokens [B, T] int64, position_offset) -> logits [B, T, vocab]. position_offset is the
// absolute position of tokens[:, 0] (sequence-parallel chunks and decoding start mid-sequence).
//
// Inference with a KV cache (docs/method.md section 6; nats/kv_cache.h): NewCache(policy, B), then
// Prefill(prompt [B, T]) and Decode(next tokens [B, x]) with x >= 1. NAtS types come from the scorer at
// inference (argmax + global bias, position 0 forced global), whatever is_training() says. Under the `nats`
// policy, Prefill + Decode give the logits of forward() in eval mode on the whole sequence, to float
// tolerance.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <vector>

#include "nats/attention.h"
#include "nats/gumbel_noise.h"
#include "nats/kv_cache.h"
#include "runtime/config.pb.h"

namespace nats {

// Per-layer statistics of the last forward (NAtS layers only; dense layers report all-global).
struct LayerStats {
  bool nats = false;
  double frac_global = 1.0, frac_local = 0.0, frac_sliding = 0.0;
  double mask_density = 1.0;  // kept area / causal area
  double kv_fraction = 1.0;   // cache entries a next query could see / tokens
};

// Model shape and attention choice for one layer stack; built from the config messages.
struct ModelSpec {
  config::ModelConfig model;
  config::NatsConfig nats;
  std::vector<bool> nats_layers;  // size n_layer; true = NAtS attention in that layer
};

// Root-mean-square norm with a learned gain (no mean subtraction, no bias).
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps = 1e-5);
  at::Tensor forward(const at::Tensor& x);

 private:
  at::Tensor weight_;
  double eps_;
};
TORCH_MODULE(RmsNorm);

class BlockImpl;
using Block = std::shared_ptr<BlockImpl>;

class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const ModelSpec& spec);

  at::Tensor forward(const at::Tensor& tokens, int64_t position_offset = 0);

  // Mean token cross-entropy of forward(inputs) against targets (both [B, T]); the head and the loss run
  // fused (nats/linear_cross_entropy.h), so the [B T, vocab] logits exist only as their own gradient buffer.
  at::Tensor Loss(const at::Tensor& inputs, const at::Tensor& targets);

  // The hidden states after the final norm, [B, T, d_model]: what the head reads, and the target that
  // post-training matches (NATS_SPEC 8).
  at::Tensor FinalHidden(const at::Tensor& tokens, int64_t position_offset = 0);
  // The head on FinalHidden's output: logits [B, T, vocab].
  at::Tensor Head(const at::Tensor& final_hidden);

  // While set, every NAtS layer attends densely (no scorer; every token global) and keeps the types and
  // statistics of the last NAtS forward: the same weights as the teacher of post-training
  // (docs/posttraining.md).
  void SetDenseAttention(bool dense);
  bool dense_attention() const { return dense_attention_; }

  const ModelSpec& spec() const { return spec_; }
  int64_t NumParameters() const;
  // Approximate training FLOPs per token (6 N + attention), for MFU.
  double FlopsPerToken() const;
  // Statistics of the most recent forward, one entry per layer.
  std::vector<LayerStats> LastLayerStats() const;
  // Token types of the most recent forward, one entry per layer: [B, H_kv, T] int8 TokenType values for NAtS
  // layers (under sequence parallelism: this rank's chunk), undefined for dense layers.
  std::vector<at::Tensor> LastLayerTypes() const;
  // The same forward's types as inference picks them from the scorer's logits (argmax + global bias, no
  // Gumbel noise): what a KV cache would keep. Equal to LastLayerTypes() outside training.
  std::vector<at::Tensor> LastLayerInferenceTypes() const;

  // A cache for `batch` sequences under `policy`, in the model's dtype and device.
  std::unique_ptr<KvCache> NewCache(const CachePolicyConfig& policy, int64_t batch) const;
  // Runs the prompt [B, T] through an empty cache. Returns the logits of the last position [B, vocab], or of
  // every position [B, T, vocab] with all_logits.
  at::Tensor Prefill(const at::Tensor& tokens, KvCache& cache, bool all_logits = false);
  // Continues the cached sequences with tokens [B, x] (x >= 1; usually 1). Returns logits as Prefill.
  at::Tensor Decode(const at::Tensor& tokens, KvCache& cache, bool all_logits = false);

  // Sequence parallelism: while `chunk` is set, forward(tokens) runs the chunk's positions
  // chunk->chunk_begin() .. + T-1 of a sequence of chunk->sequence_length() tokens, every attention layer
  // goes through chunk->Attend, and the scorer forces positions 0 and N-1 of the whole sequence. nullptr
  // clears it. Not owned; it must outlive the forward and backward passes that use it.
  void SetChunkAttention(ChunkAttention* chunk);

  // The sparsity regulariser (docs/method.md 5.4) of every NAtS layer becomes nats.lambda * scale (1 by
  // default). Each backward adds the regulariser once per sequence row it ran, unscaled by the loss
  // normalisation; a trainer whose ranks' gradients are averaged over `world` ranks passes scale = world, so
  // that the averaged gradient carries lambda once per sequence of the global batch for any dp x sp layout or
  // micro-batching.
  void SetRegulariserScale(double scale);
  // The regulariser strength from now on, in place of nats.lambda (the KV-fraction controller,
  // runtime/kv_controller.h, changes it every step); the scale above still applies on top of it.
  void SetLambda(double lambda);
  double lambda() const { return lambda_; }

  // Training-mode Gumbel noise from the counter-based source (nats/gumbel_noise.h): batch row r of the next
  // forward passes is global sample key.first_sample + r. Without a key the scorers use the torch generator.
  void SetNoiseKey(const NoiseKey& key) {
    noise_key_ = key;
    has_noise_key_ = true;
  }
  void ClearNoiseKey() { has_noise_key_ = false; }

  // Tests and benchmarks only: fixes the token types of NAtS layer `layer` to types [B or 1, H_kv, N] (int,
  // TokenType values, indexed by absolute position) in forward() and the cached paths; undefined clears it.
  void SetTypeOverride(int layer, const at::Tensor& types);

 private:
  void EnsureRope(int64_t end);
  // Token embeddings, plus the learned position embeddings of positions offset.. (position = LEARNED).
  at::Tensor Embed(const at::Tensor& tokens, int64_t position_offset);
  // Embeddings and every block: the hidden state before the final norm, [B, T, d_model].
  at::Tensor Body(const at::Tensor& tokens, int64_t position_offset);
  at::Tensor Logits(const at::Tensor& hidden);
  at::Tensor CachedForward(const at::Tensor& tokens, KvCache& cache, bool all_logits);

  ModelSpec spec_;
  ChunkAttention* chunk_ = nullptr;
  bool dense_attention_ = false;
  double lambda_ = 0;             // nats.lambda until SetLambda
  double regulariser_scale_ = 1;  // SetRegulariserScale
  NoiseKey noise_key_;
  bool has_noise_key_ = false;
  torch::nn::Embedding wte_{nullptr};
  torch::nn::Embedding wpe_{nullptr};  // learned absolute positions (position = LEARNED) only
  std::vector<Block> blocks_;
  torch::nn::AnyModule final_norm_;
  torch::nn::Linear lm_head_{nullptr};  // only when embeddings are untied
  at::Tensor rope_cos_, rope_sin_;      // [max_T, head_dim / 2], buffers
};
TORCH_MODULE(Transformer);

// Rotary embedding of x [B, H, T, D] at absolute positions offset..offset+T-1 (halves convention).
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t offset);

}  // namespace nats
