// KV caches of docs/method.md 6 (exact NAtS stores, dense) and the StreamingLLM / H2O eviction baselines.
#include "nats/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nats/masks.h"
#include "nats/token_type.h"

namespace nats {
namespace {

constexpr int8_t kGlobal = static_cast<int8_t>(TokenType::kGlobal);
constexpr int8_t kLocal = static_cast<int8_t>(TokenType::kLocal);
constexpr int8_t kSliding = static_cast<int8_t>(TokenType::kSliding);
constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kPosInf = std::numeric_limits<double>::infinity();

at::ScalarType ComputeType(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

struct StepDims {
  int64_t b, h, hkv, n_rep, x, d;
};

StepDims CheckStep(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const LayerCacheShape& shape) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "cache attention expects [B, H, x, D] q, k, v");
  TORCH_CHECK(k.sizes() == v.sizes(), "k ", k.sizes(), " and v ", v.sizes(), " differ");
  StepDims d{q.size(0), q.size(1), k.size(1), 0, q.size(2), q.size(3)};
  TORCH_CHECK(d.b == shape.batch && d.hkv == shape.kv_heads && d.d == shape.head_dim && k.size(0) == d.b &&
                  k.size(2) == d.x && k.size(3) == d.d,
              "cache step q ", q.sizes(), ", k ", k.sizes(),
              " does not match the cache shape [B=", shape.batch, ", H_kv=", shape.kv_heads,
              ", D=", shape.head_dim, "]");
  TORCH_CHECK(d.x >= 1, "a cache step needs at least one new token");
  TORCH_CHECK(d.h % d.hkv == 0, "n_head (", d.h, ") must be a multiple of n_kv_head (", d.hkv, ")");
  d.n_rep = d.h / d.hkv;
  return d;
}

// Keys of one part of the attended set (store, ring or the step's own tokens) with their visibility.
struct KeyBlock {
  at::Tensor k, v;     // [B, H_kv, n, D]
  at::Tensor visible;  // bool, broadcastable to [B, H_kv, x, n]; undefined = all visible
};

// Masked softmax attention of qf [B, H_kv, n_rep * x, D] (query heads grouped per KV head) over the blocks,
// softmax taken jointly, so no K/V is ever concatenated (the cache is only read). Returns [B, H_kv, n_rep *
// x, D].
at::Tensor AttendBlocks(const at::Tensor& qf, const std::vector<KeyBlock>& blocks, int64_t n_rep, int64_t x) {
  const int64_t b = qf.size(0), hkv = qf.size(1), d = qf.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::ScalarType ct = qf.scalar_type();
  std::vector<at::Tensor> logits;
  for (const KeyBlock& blk : blocks) {
    at::Tensor l = at::matmul(qf, blk.k.to(ct).transpose(-2, -1)).mul_(scale).view({b, hkv, n_rep, x, -1});
    if (blk.visible.defined()) l = l.masked_fill(blk.visible.logical_not().unsqueeze(2), kNegInf);
    logits.push_back(l);
  }
  at::Tensor p = at::softmax(logits.size() == 1 ? logits[0] : at::cat(logits, -1), -1);
  at::Tensor out;
  int64_t offset = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int64_t n = logits[i].size(-1);
    at::Tensor part = at::matmul(p.narrow(-1, offset, n).reshape({b, hkv, n_rep * x, n}), blocks[i].v.to(ct));
    out = out.defined() ? out.add_(part) : part;
    offset += n;
  }
  return out;
}

at::Tensor HostLongs(const std::vector<int64_t>& values, const at::Device& device) {
  return at::tensor(values, at::TensorOptions().dtype(at::kLong)).to(device);
}

// ---------------------------------------------------------------------------------------------------------------
// NAtS stores (docs/method.md 6); all_global makes it the dense cache.
class NatsLayerCache final : public LayerKvCache {
 public:
  NatsLayerCache(const LayerCacheShape& shape, bool all_global)
      : shape_(shape),
        all_global_(all_global),
        window_(all_global ? 0 : shape.attention.window),
        n_global_(shape.batch * shape.kv_heads, 0),
        n_local_(shape.batch * shape.kv_heads, 0) {
    TORCH_CHECK(window_ >= 0, "window must be >= 0, got ", window_);
    const at::TensorOptions opts = at::TensorOptions().dtype(shape.dtype).device(shape.device);
    store_k_ = at::empty({shape.batch, shape.kv_heads, 0, shape.head_dim}, opts);
    store_v_ = at::empty_like(store_k_);
    store_pos_ = at::empty({shape.batch, shape.kv_heads, 0}, opts.dtype(at::kLong));
    if (window_ > 0) {
      ring_k_ = at::zeros({shape.batch, shape.kv_heads, window_, shape.head_dim}, opts);
      ring_v_ = at::zeros_like(ring_k_);
      ring_valid_ = at::zeros({shape.batch, shape.kv_heads, window_}, opts.dtype(at::kBool));
      ring_pos_ = at::full({window_}, -1, opts.dtype(at::kLong));
    }
  }

  bool uses_types() const override { return !all_global_; }

  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& types) override {
    const StepDims dims = CheckStep(q, k, v, shape_);
    const int64_t x = dims.x, p = tokens_;
    at::Tensor types_new;  // [B, H_kv, x] int8
    if (all_global_) {
      types_new = at::zeros({dims.b, dims.hkv, x}, k.options().dtype(at::kChar));
    } else {
      TORCH_CHECK(types.defined() && types.dim() == 3 && types.size(0) == dims.b &&
                      types.size(1) == dims.hkv && types.size(2) == x,
                  "NAtS cache step needs types [B, H_kv, x] = [", dims.b, ", ", dims.hkv, ", ", x, "], got ",
                  types.defined() ? types.sizes() : at::IntArrayRef{});
      types_new = types.to(at::kChar);
    }
    const at::Tensor types_host = types_new.to(at::kCPU).contiguous();

    at::Tensor y;
    if (p == 0 && x > 1) {
      // Prefill: the training-path attention over the prompt, so the outputs are the model forward's.
      at::Tensor onehot;
      if (!all_global_) onehot = at::one_hot(types_new.to(at::kLong), kNumTokenTypes).to(q.scalar_type());
      y = Attention(q, k, v.contiguous(), onehot, shape_.attention);
    } else {
      y = AttendStep(q, k, v, types_new, types_host, dims);
    }
    Commit(k, v, types_new, types_host);
    return y;
  }

  void Append(const at::Tensor& k, const at::Tensor& v, const at::Tensor& types) override {
    TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.size(0) == shape_.batch &&
                    k.size(1) == shape_.kv_heads && k.size(3) == shape_.head_dim,
                "Append expects k, v [B, H_kv, x, D] matching the cache, got ", k.sizes());
    at::Tensor types_new =
        all_global_ ? at::zeros({shape_.batch, shape_.kv_heads, k.size(2)}, k.options().dtype(at::kChar))
                    : types.to(at::kChar);
    TORCH_CHECK(types_new.sizes() == at::IntArrayRef({k.size(0), k.size(1), k.size(2)}), "Append types ",
                types_new.sizes(), " do not match k ", k.sizes());
    Commit(k, v, types_new, types_new.to(at::kCPU).contiguous());
  }

  LayerCacheStats Stats() const override {
    LayerCacheStats st;
    const at::TensorOptions lo = at::TensorOptions().dtype(at::kLong);
    std::vector<int64_t> stored(n_global_.size());
    for (size_t i = 0; i < stored.size(); ++i) stored[i] = n_global_[i] + n_local_[i];
    at::Tensor store = at::tensor(stored, lo).view({shape_.batch, shape_.kv_heads});
    // The ring holds exactly the last W positions, so every valid bit is an entry the next query sees.
    st.kv_retained = window_ > 0 ? store + ring_valid_.sum(-1).to(at::kCPU) : store;
    st.reference_count = store + window_;
    st.tokens = tokens_;
    st.bytes = Bytes();
    st.peak_bytes = peak_bytes_;
    st.allocated_bytes = (capacity_ + window_) * EntryBytes() * shape_.batch * shape_.kv_heads;
    st.dense_bytes = tokens_ * EntryBytes() * shape_.batch * shape_.kv_heads;
    return st;
  }

  std::vector<int64_t> RetainedPositions(int64_t b, int64_t h) const override {
    const int64_t idx = b * shape_.kv_heads + h;
    std::vector<int64_t> out;
    at::Tensor pos = store_pos_.select(0, b).select(0, h).narrow(0, 0, n_global_[idx] + n_local_[idx]).cpu();
    for (int64_t i = 0; i < pos.numel(); ++i) out.push_back(pos[i].item<int64_t>());
    if (window_ > 0) {
      at::Tensor valid = ring_valid_.select(0, b).select(0, h).cpu();
      at::Tensor ring = ring_pos_.cpu();
      for (int64_t s = 0; s < window_; ++s) {
        if (valid[s].item<bool>()) out.push_back(ring[s].item<int64_t>());
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  int64_t EntryBytes() const {
    return 2 * shape_.head_dim * static_cast<int64_t>(c10::elementSize(shape_.dtype));
  }

  int64_t Bytes() const {
    int64_t entries = 0;
    for (size_t i = 0; i < n_global_.size(); ++i) entries += n_global_[i] + n_local_[i];
    entries += std::min(tokens_, window_) * shape_.batch * shape_.kv_heads;  // filled ring slots
    return entries * EntryBytes();
  }

  int64_t MaxStored() const {
    int64_t m = 0;
    for (size_t i = 0; i < n_global_.size(); ++i) m = std::max(m, n_global_[i] + n_local_[i]);
    return m;
  }

  // One step over cached entries: store (globals + locals), ring, and the step's own tokens (docs/method.md
  // 6).
  at::Tensor AttendStep(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& types_new, const at::Tensor& types_host, const StepDims& dims) {
    const int64_t x = dims.x, p = tokens_;
    const at::ScalarType ct = ComputeType(q.scalar_type());
    const at::TensorOptions lo = at::TensorOptions().dtype(at::kLong).device(q.device());
    at::Tensor qf = q.to(ct).reshape({dims.b, dims.hkv, dims.n_rep * x, dims.d});
    std::vector<KeyBlock> blocks;

    const int64_t used = MaxStored();
    if (used > 0) {
      KeyBlock blk{store_k_.narrow(2, 0, used), store_v_.narrow(2, 0, used), {}};
      std::vector<int64_t> n_g(n_global_), n_gl(n_global_.size());
      for (size_t i = 0; i < n_gl.size(); ++i) n_gl[i] = n_global_[i] + n_local_[i];
      at::Tensor slot = at::arange(used, lo).view({1, 1, 1, used});
      blk.visible = slot.lt(HostLongs(n_gl, q.device()).view({dims.b, dims.hkv, 1, 1}));
      if (x > 1 && !all_global_) {
        // Cached locals are seen by the new rows up to and including the block's first global (i <= e_j).
        auto ty = types_host.accessor<int8_t, 3>();
        std::vector<int64_t> first_global(n_g.size(), x);
        for (int64_t b = 0; b < dims.b; ++b) {
          for (int64_t h = 0; h < dims.hkv; ++h) {
            for (int64_t r = 0; r < x; ++r) {
              if (ty[b][h][r] == kGlobal) {
                first_global[b * dims.hkv + h] = r;
                break;
              }
            }
          }
        }
        at::Tensor r = at::arange(x, lo).view({1, 1, x, 1});
        at::Tensor is_global = slot.lt(HostLongs(n_g, q.device()).view({dims.b, dims.hkv, 1, 1}));
        blk.visible = is_global.logical_or(blk.visible.logical_and(
            r.le(HostLongs(first_global, q.device()).view({dims.b, dims.hkv, 1, 1}))));
      }
      blocks.push_back(blk);
    }

    if (window_ > 0 && p > 0) {
      KeyBlock blk{ring_k_, ring_v_, ring_valid_.unsqueeze(2)};
      if (x > 1) {
        // Ring entry j serves new row r iff (p + r) - j <= W. For x = 1 every filled slot holds j >= p - W.
        at::Tensor r = at::arange(x, lo).view({x, 1});
        blk.visible = blk.visible.logical_and(
            ring_pos_.view({1, window_}).ge(r + (p - window_)).view({1, 1, x, window_}));
      }
      blocks.push_back(blk);
    }

    KeyBlock own{k, v, {}};
    if (x > 1)
      own.visible =
          all_global_ ? at::ones({x, x}, lo.dtype(at::kBool)).tril() : DenseMask(types_new, window_);
    blocks.push_back(own);

    at::Tensor out = AttendBlocks(qf, blocks, dims.n_rep, x);
    return out.view({dims.b, dims.h, x, dims.d}).to(q.scalar_type());
  }

  void EnsureCapacity(int64_t needed) {
    if (needed <= capacity_) return;
    // Doubling keeps the amortised copy cost O(1) per token.
    const int64_t cap = std::max<int64_t>({needed, 2 * capacity_, 16});
    auto grow = [&](const at::Tensor& old, at::Tensor fresh) {
      if (capacity_ > 0) fresh.narrow(2, 0, capacity_).copy_(old);
      return fresh;
    };
    store_k_ =
        grow(store_k_, at::zeros({shape_.batch, shape_.kv_heads, cap, shape_.head_dim}, store_k_.options()));
    store_v_ = grow(store_v_, at::zeros_like(store_k_));
    store_pos_ = grow(store_pos_, at::full({shape_.batch, shape_.kv_heads, cap}, -1, store_pos_.options()));
    capacity_ = cap;
  }

  // docs/method.md 6 commit of the step's tokens: store = old globals (+ old locals when the block has no
  // global)
  // + the block's globals + the block's locals after its last global; the ring takes the last min(x, W)
  // positions with valid = sliding.
  void Commit(const at::Tensor& k, const at::Tensor& v, const at::Tensor& types_new,
              const at::Tensor& types_host) {
    const int64_t x = k.size(2), p = tokens_, hkv = shape_.kv_heads;
    auto ty = types_host.accessor<int8_t, 3>();
    std::vector<int64_t> bi, hi, si, ri;
    int64_t needed = 0;
    for (int64_t b = 0; b < shape_.batch; ++b) {
      for (int64_t h = 0; h < hkv; ++h) {
        const int64_t idx = b * hkv + h;
        int64_t last_global = -1;
        for (int64_t r = 0; r < x; ++r) {
          if (ty[b][h][r] == kGlobal) last_global = r;
        }
        int64_t n_g = n_global_[idx];
        int64_t n_l = last_global >= 0 ? 0 : n_local_[idx];  // a processed global drops the local store
        // Kept locals all follow the block's last global, so sequential slots keep "globals, then locals".
        for (int64_t r = 0; r < x; ++r) {
          const int8_t t = ty[b][h][r];
          if (t == kGlobal || (t == kLocal && r > last_global)) {
            bi.push_back(b);
            hi.push_back(h);
            si.push_back(n_g + n_l);
            ri.push_back(r);
            (t == kGlobal ? n_g : n_l) += 1;
          }
        }
        n_global_[idx] = n_g;
        n_local_[idx] = n_l;
        needed = std::max(needed, n_g + n_l);
      }
    }
    EnsureCapacity(needed);
    if (!bi.empty()) {
      const at::Device dev = store_k_.device();
      at::Tensor b_idx = HostLongs(bi, dev), h_idx = HostLongs(hi, dev), s_idx = HostLongs(si, dev);
      at::Tensor r_idx = HostLongs(ri, dev);
      store_k_.index_put_({b_idx, h_idx, s_idx}, k.index({b_idx, h_idx, r_idx}).to(store_k_.scalar_type()));
      store_v_.index_put_({b_idx, h_idx, s_idx}, v.index({b_idx, h_idx, r_idx}).to(store_v_.scalar_type()));
      store_pos_.index_put_({b_idx, h_idx, s_idx}, r_idx + p);
    }
    if (window_ > 0) {
      const int64_t m = std::min(x, window_);
      at::Tensor pos = at::arange(p + x - m, p + x, store_pos_.options());
      at::Tensor slots = pos.remainder(window_);
      ring_k_.index_copy_(2, slots, k.narrow(2, x - m, m).to(ring_k_.scalar_type()));
      ring_v_.index_copy_(2, slots, v.narrow(2, x - m, m).to(ring_v_.scalar_type()));
      ring_valid_.index_copy_(2, slots, types_new.narrow(2, x - m, m).eq(kSliding).to(ring_valid_.device()));
      ring_pos_.index_copy_(0, slots, pos);
    }
    tokens_ += x;
    peak_bytes_ = std::max(peak_bytes_, Bytes());
  }

  LayerCacheShape shape_;
  bool all_global_;
  int64_t window_;
  // Globals then locals per (b, h), padded to capacity_ along dim 2; counts are host-side per b * H_kv + h.
  at::Tensor store_k_, store_v_;  // [B, H_kv, capacity, D]
  at::Tensor store_pos_;          // [B, H_kv, capacity] int64 (tests and statistics)
  std::vector<int64_t> n_global_, n_local_;
  int64_t capacity_ = 0;
  // Position j lives in slot j mod W.
  at::Tensor ring_k_, ring_v_;  // [B, H_kv, W, D]
  at::Tensor ring_valid_;       // [B, H_kv, W] bool: the token is sliding
  at::Tensor ring_pos_;         // [W] int64, -1 = never written
  int64_t peak_bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// StreamingLLM / H2O: a fixed budget of entries per (b, h); an arriving token past the budget evicts one
// entry.
class EvictingLayerCache final : public LayerKvCache {
 public:
  EvictingLayerCache(const LayerCacheShape& shape, const CachePolicyConfig& policy)
      : shape_(shape), h2o_(policy.policy == CachePolicy::kH2O), budget_(policy.budget) {
    const absl::Status valid = ValidateCachePolicy(policy);
    TORCH_CHECK(valid.ok(), std::string(valid.message()));
    sink_ = h2o_ ? 0 : policy.sink_tokens;
    recent_ = h2o_ ? budget_ / 2 : budget_ - sink_;
    const at::TensorOptions opts = at::TensorOptions().dtype(shape.dtype).device(shape.device);
    store_k_ = at::zeros({shape.batch, shape.kv_heads, budget_, shape.head_dim}, opts);
    store_v_ = at::zeros_like(store_k_);
    store_pos_ = at::full({shape.batch, shape.kv_heads, budget_}, -1, opts.dtype(at::kLong));
    score_ = at::zeros({shape.batch, shape.kv_heads, budget_}, opts.dtype(ComputeType(shape.dtype)));
  }

  bool uses_types() const override { return false; }

  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor&) override {
    const StepDims dims = CheckStep(q, k, v, shape_);
    if (tokens_ == 0 && dims.x > 1) return Prefill(q, k, v, dims);
    if (dims.x > 1) {
      // Later multi-token steps are exactly the same tokens decoded one at a time.
      std::vector<at::Tensor> outs;
      for (int64_t r = 0; r < dims.x; ++r) {
        outs.push_back(Attend(q.narrow(2, r, 1), k.narrow(2, r, 1), v.narrow(2, r, 1), {}));
      }
      return at::cat(outs, 2);
    }
    const at::ScalarType ct = ComputeType(q.scalar_type());
    const double scale = 1.0 / std::sqrt(static_cast<double>(dims.d));
    at::Tensor qf = q.to(ct).reshape({dims.b, dims.hkv, dims.n_rep, dims.d});
    at::Tensor kk = store_k_.narrow(2, 0, count_).to(ct), vv = store_v_.narrow(2, 0, count_).to(ct);
    at::Tensor k_new = k.to(ct).view({dims.b, dims.hkv, 1, dims.d});
    at::Tensor v_new = v.to(ct).view({dims.b, dims.hkv, 1, dims.d});
    at::Tensor logits =
        at::cat({at::matmul(qf, kk.transpose(-2, -1)), at::matmul(qf, k_new.transpose(-2, -1))}, -1);
    at::Tensor prob = at::softmax(logits * scale, -1);  // [B, H_kv, n_rep, count + 1]
    at::Tensor out = at::matmul(prob.narrow(-1, 0, count_), vv) + prob.narrow(-1, count_, 1) * v_new;
    // H2O: attention received, summed over the query heads that share the KV head.
    at::Tensor received = prob.sum(2);  // [B, H_kv, count + 1]
    if (h2o_ && count_ > 0) score_.narrow(2, 0, count_).add_(received.narrow(-1, 0, count_));
    Insert(k, v, received.select(-1, count_));
    return out.view({dims.b, dims.h, 1, dims.d}).to(q.scalar_type());
  }

  LayerCacheStats Stats() const override {
    LayerCacheStats st;
    st.kv_retained = at::full({shape_.batch, shape_.kv_heads}, count_, at::TensorOptions().dtype(at::kLong));
    st.reference_count = st.kv_retained.clone();
    st.tokens = tokens_;
    const int64_t heads = shape_.batch * shape_.kv_heads;
    st.bytes = count_ * EntryBytes() * heads;
    st.peak_bytes = st.bytes;  // never shrinks
    st.allocated_bytes = budget_ * EntryBytes() * heads;
    st.dense_bytes = tokens_ * EntryBytes() * heads;
    return st;
  }

  std::vector<int64_t> RetainedPositions(int64_t b, int64_t h) const override {
    at::Tensor pos = store_pos_.select(0, b).select(0, h).narrow(0, 0, count_).cpu();
    std::vector<int64_t> out;
    for (int64_t i = 0; i < count_; ++i) out.push_back(pos[i].item<int64_t>());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  int64_t EntryBytes() const {
    return 2 * shape_.head_dim * static_cast<int64_t>(c10::elementSize(shape_.dtype));
  }

  // Full causal attention over the prompt (what these baselines do at prefill), then keep `budget` entries.
  at::Tensor Prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const StepDims& dims) {
    const int64_t t = dims.x;
    const at::ScalarType ct = ComputeType(q.scalar_type());
    const double scale = 1.0 / std::sqrt(static_cast<double>(dims.d));
    at::Tensor qf = q.to(ct).reshape({dims.b, dims.hkv, dims.n_rep * t, dims.d});
    at::Tensor logits =
        at::matmul(qf, k.to(ct).transpose(-2, -1)).mul_(scale).view({dims.b, dims.hkv, dims.n_rep, t, t});
    at::Tensor future = at::ones({t, t}, q.options().dtype(at::kBool)).triu(1);
    at::Tensor prob = at::softmax(logits.masked_fill(future, kNegInf), -1);
    at::Tensor out = at::matmul(prob.view({dims.b, dims.hkv, dims.n_rep * t, t}), v.to(ct));
    at::Tensor received = prob.sum({2, 3});  // [B, H_kv, t]: column sums, the H2O score
    const at::TensorOptions lo = at::TensorOptions().dtype(at::kLong).device(q.device());
    at::Tensor keep;  // [B, H_kv, n] positions
    if (t <= budget_) {
      keep = at::arange(t, lo).expand({dims.b, dims.hkv, t});
    } else if (!h2o_) {
      keep = at::cat({at::arange(sink_, lo), at::arange(t - recent_, t, lo)})
                 .expand({dims.b, dims.hkv, budget_});
    } else {
      at::Tensor heavy = std::get<1>(received.narrow(-1, 0, t - recent_).topk(budget_ - recent_, -1));
      keep = at::cat({heavy, at::arange(t - recent_, t, lo).expand({dims.b, dims.hkv, recent_})}, -1);
    }
    const int64_t n = keep.size(-1);
    at::Tensor gather = keep.unsqueeze(-1).expand({dims.b, dims.hkv, n, dims.d});
    store_k_.narrow(2, 0, n).copy_(k.gather(2, gather));
    store_v_.narrow(2, 0, n).copy_(v.gather(2, gather));
    store_pos_.narrow(2, 0, n).copy_(keep);
    score_.narrow(2, 0, n).copy_(received.gather(2, keep));
    count_ = n;
    tokens_ = t;
    return out.view({dims.b, dims.h, t, dims.d}).to(q.scalar_type());
  }

  // Adds the token at position tokens_; past the budget it replaces the victim: StreamingLLM the oldest
  // non-sink entry, H2O the smallest accumulated score outside the recent window (which includes the new
  // token).
  void Insert(const at::Tensor& k, const at::Tensor& v, const at::Tensor& own_score) {
    const int64_t b = shape_.batch, hkv = shape_.kv_heads, d = shape_.head_dim;
    at::Tensor k_new = k.reshape({b * hkv, d}).to(store_k_.scalar_type());
    at::Tensor v_new = v.reshape({b * hkv, d}).to(store_v_.scalar_type());
    if (count_ < budget_) {
      store_k_.select(2, count_).copy_(k_new.view({b, hkv, d}));
      store_v_.select(2, count_).copy_(v_new.view({b, hkv, d}));
      store_pos_.select(2, count_).fill_(tokens_);
      score_.select(2, count_).copy_(own_score);
      ++count_;
    } else {
      at::Tensor key;
      if (h2o_) {
        key = score_.masked_fill(store_pos_.gt(tokens_ - recent_), kPosInf);
      } else {
        key = store_pos_.to(at::kDouble).masked_fill(store_pos_.lt(sink_), kPosInf);
      }
      at::Tensor victim = key.argmin(-1).reshape({-1});
      const at::TensorOptions lo = victim.options();
      at::Tensor b_idx = at::arange(b, lo).repeat_interleave(hkv), h_idx = at::arange(hkv, lo).repeat({b});
      store_k_.index_put_({b_idx, h_idx, victim}, k_new);
      store_v_.index_put_({b_idx, h_idx, victim}, v_new);
      store_pos_.index_put_({b_idx, h_idx, victim}, at::full({b * hkv}, tokens_, lo));
      score_.index_put_({b_idx, h_idx, victim}, own_score.reshape({-1}));
    }
    ++tokens_;
  }

  LayerCacheShape shape_;
  bool h2o_;
  int64_t budget_, sink_ = 0, recent_ = 0;
  int64_t count_ = 0;             // entries held, the same for every (b, h)
  at::Tensor store_k_, store_v_;  // [B, H_kv, budget, D], unordered
  at::Tensor store_pos_;          // [B, H_kv, budget] int64
  at::Tensor score_;              // [B, H_kv, budget] accumulated attention (H2O)
};

}  // namespace

void LayerKvCache::Append(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false,
              "this cache cannot take tokens without attention (StreamingLLM/H2O need attention scores)");
}

absl::StatusOr<CachePolicy> ParseCachePolicy(const std::string& name) {
  if (name == "nats") return CachePolicy::kNats;
  if (name == "dense") return CachePolicy::kDense;
  if (name == "streaming") return CachePolicy::kStreaming;
  if (name == "h2o") return CachePolicy::kH2O;
  return absl::InvalidArgumentError(
      absl::StrCat("--policy: unknown cache policy '", name, "'; use one of nats, dense, streaming, h2o"));
}

std::string CachePolicyName(CachePolicy policy) {
  switch (policy) {
    case CachePolicy::kNats:
      return "nats";
    case CachePolicy::kDense:
      return "dense";
    case CachePolicy::kStreaming:
      return "streaming";
    case CachePolicy::kH2O:
      return "h2o";
  }
  return "unknown";
}

absl::Status ValidateCachePolicy(const CachePolicyConfig& config) {
  if (config.policy == CachePolicy::kStreaming) {
    if (config.sink_tokens < 0) return absl::InvalidArgumentError("StreamingLLM sink_tokens must be >= 0");
    if (config.budget <= config.sink_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("--budget ", config.budget, " is too small for --policy streaming: ", "it keeps ",
                       config.sink_tokens, " sink tokens plus a recent window, so use --budget > ",
                       config.sink_tokens, " (the paper's baseline: 68)"));
    }
  }
  if (config.policy == CachePolicy::kH2O && config.budget < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--budget ", config.budget, " is too small for --policy h2o: ",
                     "it keeps budget/2 recent and budget/2 heavy-hitter tokens, so use "
                     "--budget >= 2 (the paper's baseline: 128)"));
  }
  return absl::OkStatus();
}

std::unique_ptr<LayerKvCache> MakeNatsLayerCache(const LayerCacheShape& shape, bool all_global) {
  return std::make_unique<NatsLayerCache>(shape, all_global);
}

std::unique_ptr<LayerKvCache> MakeLayerCache(const CachePolicyConfig& policy, bool nats_layer,
                                             const LayerCacheShape& shape) {
  switch (policy.policy) {
    case CachePolicy::kNats:
      return MakeNatsLayerCache(shape, /*all_global=*/!nats_layer);
    case CachePolicy::kDense:
      return MakeNatsLayerCache(shape, /*all_global=*/true);
    case CachePolicy::kStreaming:
    case CachePolicy::kH2O:
      return std::make_unique<EvictingLayerCache>(shape, policy);
  }
  TORCH_INTERNAL_ASSERT(false, "unknown cache policy ", static_cast<int>(policy.policy));
  return nullptr;
}

KvCache::KvCache(CachePolicyConfig policy, std::vector<std::unique_ptr<LayerKvCache>> layers)
    : policy_(policy), layers_(std::move(layers)) {}

int64_t KvCache::tokens() const { return layers_.empty() ? 0 : layers_.front()->tokens(); }

std::vector<LayerCacheStats> KvCache::Stats() const {
  std::vector<LayerCacheStats> out;
  for (const auto& layer : layers_) out.push_back(layer->Stats());
  return out;
}

CacheSummary KvCache::Summary() const {
  CacheSummary s;
  s.tokens = tokens();
  for (const LayerCacheStats& st : Stats()) {
    s.retained_entries += st.kv_retained.sum().item<int64_t>();
    s.reference_entries += st.reference_count.sum().item<int64_t>();
    s.dense_entries += st.tokens * st.kv_retained.numel();
    s.bytes += st.bytes;
    s.peak_bytes += st.peak_bytes;
    s.allocated_bytes += st.allocated_bytes;
    s.dense_bytes += st.dense_bytes;
    s.layer_kv_fraction.push_back(
        st.tokens > 0 ? st.kv_retained.to(at::kDouble).mean().item<double>() / st.tokens : 0.0);
  }
  return s;
}

}  // namespace nats
