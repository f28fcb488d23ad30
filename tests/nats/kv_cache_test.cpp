// Tests of the inference KV caches (docs/method.md section 6 and section 9 "KV cache"): prefill of any length
// then decode (one token or a few at a time) gives the logits of the model's forward with the same types;
// after every step each layer/head holds exactly the keys the rule of section 3 lets the next query see
// (brute force from DenseMask); statistics match KvRetained; the dense policy equals full attention;
// StreamingLLM / H2O with a budget >= T equal dense and keep the entries their policy names; bad inputs fail
// with clear messages.
#include "nats/kv_cache.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nats/masks.h"
#include "nats/token_type.h"
#include "nats/transformer.h"

namespace nats {
namespace {

constexpr int64_t kG = static_cast<int64_t>(TokenType::kGlobal);
constexpr int64_t kL = static_cast<int64_t>(TokenType::kLocal);
constexpr int64_t kS = static_cast<int64_t>(TokenType::kSliding);
constexpr int64_t kVocab = 97;

ModelSpec SmallSpec(bool nats, int64_t window, int n_kv_head = 0,
                    std::vector<bool> nats_layers = {true, true}) {
  ModelSpec spec;
  spec.model.set_vocab_size(kVocab);
  spec.model.set_n_layer(2);
  spec.model.set_n_head(4);
  spec.model.set_n_kv_head(n_kv_head);
  spec.model.set_d_model(64);
  spec.model.set_context_length(64);
  spec.model.set_attention(nats ? config::ModelConfig::NATS : config::ModelConfig::DENSE);
  spec.nats.set_window(static_cast<int32_t>(window));
  for (bool b : nats_layers) spec.nats_layers.push_back(nats && b);
  return spec;
}

Transformer MakeModel(const ModelSpec& spec, uint64_t seed) {
  torch::manual_seed(seed);
  Transformer model(spec);
  model->to(torch::kDouble);
  model->eval();
  return model;
}

// Random types [B, H_kv, n] with the given probabilities of (global, local, sliding).
at::Tensor RandomTypes(int64_t b, int64_t h, int64_t n, double pg, double pl, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor u = torch::rand({b, h, n}, torch::kDouble);
  at::Tensor t = torch::full({b, h, n}, kS, torch::kLong);
  t.masked_fill_(u.lt(pg + pl), kL);
  t.masked_fill_(u.lt(pg), kG);
  return t.to(torch::kChar);
}

// The keys a query at position n sees under docs/method.md 3, from the dense mask of the types extended by
// one token.
std::vector<int64_t> BruteForceRetained(const at::Tensor& types, int64_t b, int64_t h, int64_t n,
                                        int64_t window) {
  at::Tensor prefix = types.select(0, b).select(0, h).narrow(0, 0, n).to(torch::kLong);
  at::Tensor extended = torch::cat({prefix, torch::full({1}, kS, torch::kLong)}).view({1, 1, n + 1});
  at::Tensor row = DenseMask(extended, window)[0][0][n];
  std::vector<int64_t> out;
  for (int64_t j = 0; j < n; ++j) {
    if (row[j].item<bool>()) out.push_back(j);
  }
  return out;
}

struct Mix {
  std::string name;
  double pg, pl;
};

void ExpectLogitsClose(const at::Tensor& got, const at::Tensor& want, const std::string& where) {
  ASSERT_EQ(got.sizes(), want.sizes()) << where;
  const double err = (got - want).abs().max().item<double>();
  EXPECT_LT(err, 1e-9) << where << ": max |diff| " << err;
}

// Runs tokens through a cache in steps of the given sizes (the first is the prefill) and checks logits
// against `full` and, when `types` is given (per layer), the retained sets and statistics after every step.
void CheckCachedRun(Transformer& model, const CachePolicyConfig& policy, const at::Tensor& tokens,
                    const at::Tensor& full, const std::vector<int64_t>& steps,
                    const std::vector<at::Tensor>& types, int64_t window, const std::string& where) {
  auto cache = model->NewCache(policy, tokens.size(0));
  int64_t pos = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    const int64_t x = steps[s];
    at::Tensor chunk = tokens.narrow(1, pos, x);
    at::Tensor logits = s == 0 ? model->Prefill(chunk, *cache, /*all_logits=*/true)
                               : model->Decode(chunk, *cache, /*all_logits=*/true);
    const std::string at_step = where + " step " + std::to_string(s) + " (positions " + std::to_string(pos) +
                                ".." + std::to_string(pos + x - 1) + ")";
    ExpectLogitsClose(logits, full.narrow(1, pos, x), at_step);
    pos += x;
    ASSERT_EQ(cache->tokens(), pos);
    for (size_t l = 0; l < types.size(); ++l) {
      if (!types[l].defined()) continue;
      const std::vector<LayerCacheStats> stats = cache->Stats();
      at::Tensor expected_retained = KvRetained(types[l].narrow(2, 0, pos), window);
      EXPECT_TRUE(torch::equal(stats[l].kv_retained, expected_retained)) << at_step << " layer " << l;
      for (int64_t b = 0; b < tokens.size(0); ++b) {
        for (int64_t h = 0; h < types[l].size(1); ++h) {
          EXPECT_EQ(cache->layer(static_cast<int>(l)).RetainedPositions(b, h),
                    BruteForceRetained(types[l], b, h, pos, window))
              << at_step << " layer " << l << " b " << b << " h " << h;
        }
      }
    }
    if (::testing::Test::HasFailure()) return;  // one failing step is enough to read
  }
}

// The core claim of docs/method.md 6, over prompt lengths (1 included), windows (1, 3, 16, >= T), type mixes
// and step sizes, with batch 2 rows that have different types and GQA (4 query heads over 2 KV heads).
TEST(KvCache, PrefillThenDecodeEqualsForwardWithInjectedTypes) {
  const int64_t b = 2, n = 29, hkv = 2;
  const std::vector<Mix> mixes = {{"paper-like", 0.05, 0.15}, {"balanced", 0.3, 0.35},
                                  {"local-heavy", 0.1, 0.8},  {"all-global", 1.0, 0.0},
                                  {"all-local", 0.0, 1.0},    {"all-sliding", 0.0, 0.0}};
  for (int64_t window : {1, 3, 16, 40}) {
    ModelSpec spec = SmallSpec(/*nats=*/true, window, /*n_kv_head=*/hkv);
    Transformer model = MakeModel(spec, 7);
    torch::manual_seed(11);
    at::Tensor tokens = torch::randint(kVocab, {b, n}, torch::kLong);
    for (size_t m = 0; m < mixes.size(); ++m) {
      std::vector<at::Tensor> types;
      for (int l = 0; l < 2; ++l) {
        types.push_back(RandomTypes(b, hkv, n, mixes[m].pg, mixes[m].pl, 100 * m + l + window));
        model->SetTypeOverride(l, types.back());
      }
      at::Tensor full = model->forward(tokens);
      const std::string where = "W=" + std::to_string(window) + " mix=" + mixes[m].name;
      for (const std::vector<int64_t>& steps : std::vector<std::vector<int64_t>>{
               {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
               {2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
               {9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
               {n},
               {5, 3, 1, 7, 2, 4, 1, 6}}) {
        CheckCachedRun(model, {}, tokens, full, steps, types, window, where);
        if (HasFailure()) return;
      }
    }
  }
}

// Types from the scorer itself (no override): scaled-up scorer weights give a mix of all three types; the
// cached path must reproduce the eval-mode forward, including the forced-global first position.
TEST(KvCache, PrefillThenDecodeEqualsForwardWithScorerTypes) {
  for (int64_t window : {1, 3, 16}) {
    ModelSpec spec = SmallSpec(/*nats=*/true, window);
    Transformer model = MakeModel(spec, 3);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : model->named_parameters()) {
        if (p.key().find("scorer") != std::string::npos) p.value().normal_(0.0, 0.5);
      }
    }
    torch::manual_seed(5);
    at::Tensor tokens = torch::randint(kVocab, {2, 40}, torch::kLong);
    at::Tensor full = model->forward(tokens);
    const std::vector<LayerStats> stats = model->LastLayerStats();
    ASSERT_TRUE(stats[0].nats);
    EXPECT_GT(stats[0].frac_local, 0.05) << "the scorer should produce a mix of types";
    EXPECT_GT(stats[0].frac_sliding, 0.05) << "the scorer should produce a mix of types";
    for (int64_t prefill : {1, 4, 40}) {
      std::vector<int64_t> steps = {prefill};
      for (int64_t i = prefill; i < 40; ++i) steps.push_back(1);
      CheckCachedRun(model, {}, tokens, full, steps, {}, window, "scorer W=" + std::to_string(window));
    }
  }
}

// The same in float32 (the dtype generation runs in), to float tolerance.
TEST(KvCache, Float32DecodeMatchesForward) {
  torch::manual_seed(7);
  Transformer model(SmallSpec(/*nats=*/true, 5, /*n_kv_head=*/2));
  model->eval();
  at::Tensor types = RandomTypes(1, 2, 60, 0.05, 0.2, 5);
  for (int l = 0; l < 2; ++l) model->SetTypeOverride(l, types);
  at::Tensor tokens = torch::randint(kVocab, {1, 60}, torch::kLong);
  at::Tensor full = model->forward(tokens);
  auto cache = model->NewCache({}, 1);
  at::Tensor got = model->Prefill(tokens.narrow(1, 0, 17), *cache, /*all_logits=*/true);
  EXPECT_TRUE(torch::allclose(got, full.narrow(1, 0, 17), 1e-4, 1e-5));
  for (int64_t i = 17; i < 60; ++i) {
    got = model->Decode(tokens.narrow(1, i, 1), *cache);
    EXPECT_TRUE(torch::allclose(got, full.select(1, i), 1e-4, 1e-5)) << "position " << i;
  }
}

// A model mixing a dense layer and a NAtS layer: the dense layer gets the dense cache (every token global).
TEST(KvCache, MixedDenseAndNatsLayers) {
  ModelSpec spec = SmallSpec(/*nats=*/true, 3, 0, {false, true});
  Transformer model = MakeModel(spec, 9);
  torch::manual_seed(2);
  at::Tensor tokens = torch::randint(kVocab, {1, 21}, torch::kLong);
  at::Tensor types1 = RandomTypes(1, 4, 21, 0.1, 0.3, 4);
  model->SetTypeOverride(1, types1);
  EXPECT_THROW(model->SetTypeOverride(0, types1), c10::Error);  // layer 0 is dense
  at::Tensor full = model->forward(tokens);
  std::vector<int64_t> steps = {3};
  for (int i = 3; i < 21; ++i) steps.push_back(1);
  CheckCachedRun(model, {}, tokens, full, steps, {torch::zeros({1, 4, 21}, torch::kChar), types1}, 3,
                 "mixed");
  auto cache = model->NewCache({}, 1);
  model->Prefill(tokens, *cache);
  EXPECT_FALSE(cache->layer(0).uses_types());
  EXPECT_TRUE(cache->layer(1).uses_types());
  EXPECT_EQ(cache->Stats()[0].kv_retained.sum().item<int64_t>(), 4 * 21);  // dense: everything
}

// Statistics: kv_retained / reference count / bytes follow docs/method.md 6 and the dense cache's bytes.
TEST(KvCache, StatisticsMatchTheRule) {
  const int64_t window = 4, n = 50;
  ModelSpec spec = SmallSpec(/*nats=*/true, window);
  Transformer model = MakeModel(spec, 1);
  at::Tensor types = RandomTypes(1, 4, n, 0.05, 0.15, 3);
  for (int l = 0; l < 2; ++l) model->SetTypeOverride(l, types);
  torch::manual_seed(0);
  at::Tensor tokens = torch::randint(kVocab, {1, n}, torch::kLong);
  auto cache = model->NewCache({}, 1);
  model->Prefill(tokens.narrow(1, 0, 20), *cache);
  for (int64_t i = 20; i < n; ++i) model->Decode(tokens.narrow(1, i, 1), *cache);
  const LayerCacheStats st = cache->Stats()[0];
  EXPECT_EQ(st.tokens, n);
  EXPECT_TRUE(torch::equal(st.kv_retained, KvRetained(types, window)));
  EXPECT_TRUE(torch::equal(st.reference_count, KvRetainedReferenceCount(types, window)));
  const int64_t entry = 2 * 16 * sizeof(double);  // K and V, head_dim 16, double
  EXPECT_EQ(st.dense_bytes, n * 4 * entry);
  // Bytes = store entries (|G| + |L|) + the W ring slots.
  EXPECT_EQ(st.bytes, (KvRetainedReferenceCount(types, window).sum().item<int64_t>()) * entry);
  EXPECT_GE(st.peak_bytes, st.bytes);
  EXPECT_GE(st.allocated_bytes, st.bytes);
  const CacheSummary sum = cache->Summary();
  EXPECT_EQ(sum.dense_entries, 2 * 4 * n);
  EXPECT_EQ(sum.retained_entries, 2 * KvRetained(types, window).sum().item<int64_t>());
  ASSERT_EQ(sum.layer_kv_fraction.size(), 2u);
  EXPECT_NEAR(sum.layer_kv_fraction[0],
              KvRetained(types, window).to(torch::kDouble).mean().item<double>() / n, 1e-12);
  EXPECT_LT(sum.bytes, sum.dense_bytes / 2);
}

// The dense policy is full attention, in a dense model and in a NAtS model (scorer ignored).
TEST(KvCache, DensePolicyEqualsFullAttention) {
  torch::manual_seed(4);
  at::Tensor tokens = torch::randint(kVocab, {2, 25}, torch::kLong);
  CachePolicyConfig dense{CachePolicy::kDense};
  std::vector<int64_t> steps = {6};
  for (int i = 6; i < 25; ++i) steps.push_back(1);
  {
    Transformer model = MakeModel(SmallSpec(/*nats=*/false, 16), 5);
    at::Tensor full = model->forward(tokens);
    CheckCachedRun(model, dense, tokens, full, steps, {}, 0, "dense model, dense policy");
    CheckCachedRun(model, {}, tokens, full, steps, {}, 0, "dense model, nats policy");
  }
  {
    Transformer model = MakeModel(SmallSpec(/*nats=*/true, 2), 5);
    // Full attention = NAtS with every token global.
    for (int l = 0; l < 2; ++l) model->SetTypeOverride(l, torch::zeros({1, 4, 25}, torch::kChar));
    at::Tensor full = model->forward(tokens);
    for (int l = 0; l < 2; ++l) model->SetTypeOverride(l, RandomTypes(1, 4, 25, 0.1, 0.1, 8));  // ignored
    CheckCachedRun(model, dense, tokens, full, steps, {}, 0, "nats model, dense policy");
  }
}

// StreamingLLM and H2O with a budget >= T never evict: they equal dense attention, from prefill or from
// decode.
TEST(KvCache, EvictionPoliciesWithLargeBudgetEqualDense) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/false, 16, /*n_kv_head=*/2), 6);
  torch::manual_seed(8);
  at::Tensor tokens = torch::randint(kVocab, {2, 30}, torch::kLong);
  at::Tensor full = model->forward(tokens);
  for (CachePolicy policy : {CachePolicy::kStreaming, CachePolicy::kH2O}) {
    for (int64_t budget : {30, 64}) {
      CachePolicyConfig cfg{policy, budget};
      std::vector<int64_t> one_by_one(30, 1);
      std::vector<int64_t> prefill_then = {12};
      for (int i = 12; i < 30; ++i) prefill_then.push_back(1);
      const std::string where = CachePolicyName(policy) + " budget " + std::to_string(budget);
      CheckCachedRun(model, cfg, tokens, full, one_by_one, {}, 0, where);
      CheckCachedRun(model, cfg, tokens, full, prefill_then, {}, 0, where);
      CheckCachedRun(model, cfg, tokens, full, {30}, {}, 0, where);
    }
  }
}

// With a small budget the caches hold exactly what their policies name, and differ from dense.
TEST(KvCache, EvictionPoliciesKeepWhatTheyName) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/false, 16), 6);
  torch::manual_seed(8);
  const int64_t n = 40, budget = 10;
  at::Tensor tokens = torch::randint(kVocab, {1, n}, torch::kLong);
  at::Tensor full = model->forward(tokens);
  for (bool prefill : {false, true}) {
    auto streaming = model->NewCache({CachePolicy::kStreaming, budget, 4}, 1);
    auto h2o = model->NewCache({CachePolicy::kH2O, budget}, 1);
    at::Tensor last_streaming, last_h2o;
    int64_t start = 0;
    if (prefill) {
      model->Prefill(tokens.narrow(1, 0, 25), *streaming);
      model->Prefill(tokens.narrow(1, 0, 25), *h2o);
      start = 25;
    }
    for (int64_t i = start; i < n; ++i) {
      last_streaming = model->Decode(tokens.narrow(1, i, 1), *streaming);
      last_h2o = model->Decode(tokens.narrow(1, i, 1), *h2o);
      const int64_t seen = i + 1;
      for (int l = 0; l < 2; ++l) {
        for (int64_t h = 0; h < 4; ++h) {
          std::vector<int64_t> want;
          for (int64_t j = 0; j < seen; ++j) {
            if (seen <= budget || j < 4 || j >= seen - (budget - 4)) want.push_back(j);
          }
          EXPECT_EQ(streaming->layer(l).RetainedPositions(0, h), want) << "streaming at " << i;
          const std::vector<int64_t> got = h2o->layer(l).RetainedPositions(0, h);
          ASSERT_EQ(static_cast<int64_t>(got.size()), std::min(seen, budget));
          // The budget/2 most recent positions are always kept.
          for (int64_t j = std::max<int64_t>(0, seen - budget / 2); j < seen; ++j) {
            EXPECT_TRUE(std::find(got.begin(), got.end(), j) != got.end())
                << "h2o lost recent " << j << " at " << i;
          }
        }
      }
    }
    EXPECT_GT((last_streaming - full.select(1, n - 1)).abs().max().item<double>(), 1e-6);
    EXPECT_GT((last_h2o - full.select(1, n - 1)).abs().max().item<double>(), 1e-6);
    const CacheSummary s = streaming->Summary();
    EXPECT_EQ(s.retained_entries, 2 * 4 * budget);
    EXPECT_EQ(s.dense_entries, 2 * 4 * n);
  }
}

// H2O keeps heavy hitters: a key that attracts all attention survives eviction outside the recent window.
TEST(KvCache, H2OKeepsTheHeaviestKey) {
  LayerCacheShape shape;
  shape.batch = 1;
  shape.kv_heads = 1;
  shape.head_dim = 4;
  shape.dtype = torch::kDouble;
  auto cache = MakeLayerCache({CachePolicy::kH2O, 4}, false, shape);
  const at::Tensor q = torch::tensor({10.0, 0.0, 0.0, 0.0}, torch::kDouble).view({1, 1, 1, 4});
  for (int64_t i = 0; i < 12; ++i) {
    // Position 1 has the key aligned with every query; the others are orthogonal.
    at::Tensor k =
        i == 1 ? q.clone() : torch::tensor({0.0, 1.0, 0.0, 0.0}, torch::kDouble).view({1, 1, 1, 4});
    cache->Attend(q, k, torch::randn({1, 1, 1, 4}, torch::kDouble), {});
  }
  const std::vector<int64_t> kept = cache->RetainedPositions(0, 0);
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 1, 10, 11}));  // 0: its own full attention at step 0
}

// Append (no attention) builds the same cache as Attend: the same retained sets, and the same next outputs.
TEST(KvCache, AppendBuildsTheSameCacheAsAttend) {
  LayerCacheShape shape;
  shape.batch = 2;
  shape.kv_heads = 3;
  shape.head_dim = 8;
  shape.attention.window = 5;
  shape.dtype = torch::kDouble;
  const int64_t n = 37;
  at::Tensor types = RandomTypes(2, 3, n + 1, 0.1, 0.4, 12);
  torch::manual_seed(3);
  at::Tensor q = torch::randn({2, 6, n + 1, 8}, torch::kDouble);
  at::Tensor k = torch::randn({2, 3, n + 1, 8}, torch::kDouble),
             v = torch::randn({2, 3, n + 1, 8}, torch::kDouble);
  auto attended = MakeNatsLayerCache(shape, false);
  auto appended = MakeNatsLayerCache(shape, false);
  attended->Attend(q.narrow(2, 0, 20), k.narrow(2, 0, 20), v.narrow(2, 0, 20), types.narrow(2, 0, 20));
  appended->Append(k.narrow(2, 0, 11), v.narrow(2, 0, 11), types.narrow(2, 0, 11));
  appended->Append(k.narrow(2, 11, 9), v.narrow(2, 11, 9), types.narrow(2, 11, 9));
  for (int64_t i = 20; i < n; ++i) {
    attended->Attend(q.narrow(2, i, 1), k.narrow(2, i, 1), v.narrow(2, i, 1), types.narrow(2, i, 1));
    appended->Append(k.narrow(2, i, 1), v.narrow(2, i, 1), types.narrow(2, i, 1));
  }
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 3; ++h) {
      EXPECT_EQ(appended->RetainedPositions(b, h), BruteForceRetained(types, b, h, n, 5));
      EXPECT_EQ(attended->RetainedPositions(b, h), appended->RetainedPositions(b, h));
    }
  }
  at::Tensor a =
      attended->Attend(q.narrow(2, n, 1), k.narrow(2, n, 1), v.narrow(2, n, 1), types.narrow(2, n, 1));
  at::Tensor p =
      appended->Attend(q.narrow(2, n, 1), k.narrow(2, n, 1), v.narrow(2, n, 1), types.narrow(2, n, 1));
  EXPECT_LT((a - p).abs().max().item<double>(), 1e-12);
  auto h2o = MakeLayerCache({CachePolicy::kH2O, 8}, false, shape);
  EXPECT_THROW(h2o->Append(k, v, types), c10::Error);
}

TEST(KvCache, BadInputsGiveClearErrors) {
  auto parsed = ParseCachePolicy("lru");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(std::string(parsed.status().message()).find("--policy"), std::string::npos);
  EXPECT_NE(std::string(parsed.status().message()).find("streaming"), std::string::npos);
  EXPECT_EQ(*ParseCachePolicy("h2o"), CachePolicy::kH2O);
  absl::Status small = ValidateCachePolicy({CachePolicy::kStreaming, 4, 4});
  ASSERT_FALSE(small.ok());
  EXPECT_NE(std::string(small.message()).find("--budget"), std::string::npos);
  EXPECT_FALSE(ValidateCachePolicy({CachePolicy::kH2O, 1}).ok());
  EXPECT_TRUE(ValidateCachePolicy({CachePolicy::kNats, 0}).ok());

  Transformer model = MakeModel(SmallSpec(/*nats=*/true, 4), 1);
  at::Tensor tokens = torch::randint(kVocab, {1, 5}, torch::kLong);
  auto cache = model->NewCache({}, 1);
  model->Prefill(tokens, *cache);
  try {
    model->Prefill(tokens, *cache);
    FAIL() << "a second Prefill must fail";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Decode"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model->Decode(torch::randint(kVocab, {2, 1}, torch::kLong), *cache),
               c10::Error);                                                             // wrong batch
  EXPECT_THROW(model->Decode(torch::zeros({1, 0}, torch::kLong), *cache), c10::Error);  // no tokens
  auto layer = MakeNatsLayerCache(LayerCacheShape{}, /*all_global=*/false);
  EXPECT_THROW(
      layer->Attend(torch::randn({1, 1, 1, 1}), torch::randn({1, 1, 1, 1}), torch::randn({1, 1, 1, 1}), {}),
      c10::Error);  // a NAtS cache needs types
}

}  // namespace
}  // namespace nats
