// Decode-step latency and KV cache bytes of the NAtS cache vs a dense cache (docs/method.md sections 6 and 8:
// "decode ~1.4x faster at long context", "~3% KV cache").
//
// Model: 4 layers, d_model 256, 4 heads (head_dim 64), vocab 512 (so the output layer does not hide
// attention), NAtS in every layer, W = 64. For each context C the caches are built directly from random K/V
// with LayerKvCache::Append (a model prefill of 32k tokens with the dense O(T^2) reference attention would
// not fit in memory here); the NAtS types are injected with Transformer::SetTypeOverride: per (layer, head)
// i.i.d. 3% global, 12% local, 85% sliding (the mix of a trained model in the paper's regime), position 0
// global. Then one token at a time goes through Transformer::Decode (the whole model step: embeddings, Q/K/V,
// cached attention, MLP, logits) and, separately, through the attention of each layer alone
// (LayerKvCache::Attend).
//
// usage: decode_bench [--contexts 1024,4096,16384,32768] [--steps 20] [--threads 2]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "nats/kv_cache.h"
#include "nats/token_type.h"
#include "nats/transformer.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kLayers = 4, kDModel = 256, kHeads = 4, kWindow = 64, kVocab = 512;
constexpr double kGlobal = 0.03, kLocal = 0.12;

nats::ModelSpec BenchSpec(int64_t context) {
  nats::ModelSpec spec;
  spec.model.set_vocab_size(kVocab);
  spec.model.set_n_layer(kLayers);
  spec.model.set_n_head(kHeads);
  spec.model.set_d_model(kDModel);
  spec.model.set_context_length(static_cast<int32_t>(context));
  spec.model.set_attention(nats::config::ModelConfig::NATS);
  spec.nats.set_window(kWindow);
  spec.nats_layers.assign(kLayers, true);
  return spec;
}

at::Tensor MixedTypes(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor u = torch::rand({1, kHeads, n});
  at::Tensor t = torch::full({1, kHeads, n}, static_cast<int64_t>(nats::TokenType::kSliding), torch::kLong);
  t.masked_fill_(u.lt(kGlobal + kLocal), static_cast<int64_t>(nats::TokenType::kLocal));
  t.masked_fill_(u.lt(kGlobal), static_cast<int64_t>(nats::TokenType::kGlobal));
  t.select(2, 0).fill_(static_cast<int64_t>(nats::TokenType::kGlobal));
  return t.to(torch::kChar);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  double step_ms = 0, attention_ms = 0;
  int64_t bytes = 0, allocated = 0, dense_bytes = 0, retained = 0, dense_entries = 0;
};

Result Run(nats::Transformer& model, nats::CachePolicy policy, int64_t context, int steps,
           const std::vector<at::Tensor>& types) {
  torch::NoGradGuard no_grad;
  const int64_t head_dim = kDModel / kHeads;
  Result r;
  auto cache = model->NewCache({policy}, 1);
  torch::manual_seed(7);
  for (int l = 0; l < kLayers; ++l) {
    // Chunks keep the temporary K/V small; the cache grows as it would while decoding.
    for (int64_t start = 0; start < context; start += 4096) {
      const int64_t n = std::min<int64_t>(4096, context - start);
      at::Tensor k = torch::randn({1, kHeads, n, head_dim}), v = torch::randn({1, kHeads, n, head_dim});
      cache->layer(l).Append(k, v, types[l].narrow(2, start, n));
    }
  }
  const nats::CacheSummary s = cache->Summary();
  r.bytes = s.bytes;
  r.allocated = s.allocated_bytes;
  r.dense_bytes = s.dense_bytes;
  r.retained = s.retained_entries;
  r.dense_entries = s.dense_entries;

  // Whole model step.
  std::vector<double> times;
  at::Tensor token = torch::randint(kVocab, {1, 1}, torch::kLong);
  for (int i = 0; i < steps + 3; ++i) {
    const auto t0 = Clock::now();
    at::Tensor logits = model->Decode(token, *cache);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (i >= 3) times.push_back(ms);
    token = logits.argmax(-1).view({1, 1});
  }
  r.step_ms = Median(times);

  // Attention alone: one new token per layer cache (q, k, v random), summed over the layers.
  times.clear();
  for (int i = 0; i < steps + 3; ++i) {
    at::Tensor q = torch::randn({1, kHeads, 1, head_dim});
    at::Tensor k = torch::randn({1, kHeads, 1, head_dim}), v = torch::randn({1, kHeads, 1, head_dim});
    const int64_t pos = cache->tokens();
    double total = 0;
    for (int l = 0; l < kLayers; ++l) {
      at::Tensor ty = types[l].narrow(2, pos, 1);
      const auto t0 = Clock::now();
      cache->layer(l).Attend(q, k, v, ty);
      total += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
    if (i >= 3) times.push_back(total);
  }
  r.attention_ms = Median(times);
  return r;
}

std::vector<int64_t> ParseList(const char* text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> contexts = {1024, 4096, 16384, 32768};
  int steps = 20, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--contexts"))
      contexts = ParseList(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "decode_bench: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  at::set_num_threads(threads);
  std::printf(
      "decode_bench: %d layers, d_model %d, %d heads (head_dim %d), W %d, fp32, %d threads; NAtS types "
      "i.i.d. %.0f%% global / %.0f%% local / %.0f%% sliding; median of %d steps\n",
      kLayers, kDModel, kHeads, kDModel / kHeads, kWindow, threads, 100 * kGlobal, 100 * kLocal,
      100 * (1 - kGlobal - kLocal), steps);
  std::printf(
      "| context | cache | entries kept | bytes held | bytes allocated | bytes vs dense | decode step ms | "
      "attention ms (4 layers) | step speed-up | attention speed-up |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int64_t context : contexts) {
    torch::manual_seed(1);
    nats::Transformer model(BenchSpec(context));
    model->eval();
    std::vector<at::Tensor> types;
    for (int l = 0; l < kLayers; ++l) {
      types.push_back(MixedTypes(context + 2 * steps + 8, 100 + l));
      model->SetTypeOverride(l, types.back());
    }
    const Result dense = Run(model, nats::CachePolicy::kDense, context, steps, types);
    const Result nats_r = Run(model, nats::CachePolicy::kNats, context, steps, types);
    for (const auto& [name, r] : {std::pair<const char*, const Result&>{"dense", dense}, {"NAtS", nats_r}}) {
      std::printf(
          "| %lld | %s | %lld / %lld | %.2f MiB | %.2f MiB | %.1f%% | %.3f | %.3f | %.2fx | %.2fx |\n",
          static_cast<long long>(context), name, static_cast<long long>(r.retained),
          static_cast<long long>(r.dense_entries), r.bytes / 1048576.0, r.allocated / 1048576.0,
          100.0 * r.bytes / r.dense_bytes, r.step_ms, r.attention_ms, dense.step_ms / r.step_ms,
          dense.attention_ms / r.attention_ms);
    }
    std::fflush(stdout);
  }
  return 0;
}
