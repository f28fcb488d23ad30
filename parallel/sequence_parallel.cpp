// Sequence parallelism with the retained-KV exchange (docs/method.md section 7); see the header for the
// layout.
#include "parallel/sequence_parallel.h"

#include <ATen/core/ivalue.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "nats/fused_attention.h"
#include "nats/nats_attention_reference.h"
#include "nats/token_type.h"

namespace nats::parallel {
namespace {

constexpr int64_t kGlobal = static_cast<int64_t>(TokenType::kGlobal);
constexpr int64_t kLocal = static_cast<int64_t>(TokenType::kLocal);
constexpr int64_t kSliding = static_cast<int64_t>(TokenType::kSliding);

void ThrowIfError(const absl::Status& s, const char* what) {
  TORCH_CHECK(s.ok(), "sequence parallel ", what, ": ", std::string(s.ToString()));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// What one exchange keeps for its backward.
struct ExchangePlan : torch::CustomClassHolder {
  SequenceParallel* sp = nullptr;
  int layer = 0;
  int64_t batch = 0, heads = 0, chunk = 0, head_dim = 0, prefix = 0;
  at::Tensor own_rows;             // [n_own] flat (b * H + h) * Tc + t of the entries this rank sent
  at::Tensor slot_source;          // [B * H * prefix] index into the used received entries (n_used = pad)
  std::vector<int64_t> used_rows;  // entries used from each earlier rank (rank order)
  int64_t n_used = 0;
  at::TensorOptions float_options;
};

// Forward: pack, all-gather, build the prefix. Backward: return the prefix gradients to their owners.
class KvExchangeFunction : public torch::autograd::Function<KvExchangeFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& onehot,
                                                SequenceParallel* sp, int64_t layer, int64_t window) {
    const auto start = std::chrono::steady_clock::now();
    Communicator& comm = sp->comm();
    const int rank = comm.rank(), size = comm.size();
    const int64_t b = k.size(0), h = k.size(1), tc = k.size(2), d = k.size(3);
    const int64_t begin = sp->chunk_begin();
    const bool full = sp->mode() == SpExchange::kFull;
    at::Tensor types = onehot.argmax(-1);                    // [B, H, Tc] int64
    const at::TensorOptions long_options = types.options();  // on the model's device (CUDA under NCCL)

    // This rank's packet (its boundary state): globals, locals after its last global, the last W positions.
    at::Tensor keep;
    if (rank ==
        size - 1) {  // no later rank reads the last chunk's boundary state: contribute an empty packet
      keep = at::zeros({b, h, tc}, long_options.dtype(at::kBool));
    } else if (full) {
      keep = at::ones({b, h, tc}, long_options.dtype(at::kBool));
    } else {
      at::Tensor pos = at::arange(tc, long_options).view({1, 1, tc});
      at::Tensor is_global = types == kGlobal;
      at::Tensor last_global =
          at::where(is_global, pos, at::full({}, -1, long_options)).amax(-1, /*keepdim=*/true);
      keep = is_global | ((types == kLocal) & (pos > last_global)) | (pos >= tc - window);
    }
    at::Tensor rows = keep.reshape({-1}).nonzero().squeeze(1);  // ascending (b, h, t)
    at::Tensor meta = at::stack({at::div(rows, h * tc, "floor"), at::remainder(at::div(rows, tc, "floor"), h),
                                 at::remainder(rows, tc) + begin, types.reshape({-1}).index_select(0, rows)},
                                1)
                          .to(at::kInt)
                          .contiguous();  // [n, 4] int32: batch row, KV head, absolute position, type
    // One packet row per entry: [4 metadata columns | K | V] in the activation dtype, so that one all-gather
    // moves everything. float32 carries the int32 metadata bit for bit; float64 holds it exactly as numbers.
    const at::ScalarType dtype = k.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
                "sequence parallel exchanges float32 or float64 activations, got ", dtype);
    at::Tensor packet =
        at::cat({dtype == at::kFloat ? meta.view(at::kFloat) : meta.to(dtype),
                 k.reshape({-1, d}).index_select(0, rows), v.reshape({-1, d}).index_select(0, rows)},
                1)
            .contiguous();
    std::vector<at::Tensor> packets;
    ThrowIfError(comm.AllGatherV(packet, &packets), "AllGatherV (KV packets)");
    // The selection below is a host loop over the (small) metadata; the KV stays on its device.
    std::vector<at::Tensor> metas, payloads;
    for (const at::Tensor& p : packets) {
      at::Tensor m = p.narrow(1, 0, 4).contiguous();
      metas.push_back((dtype == at::kFloat ? m.view(at::kInt) : m.to(at::kInt)).to(at::kCPU).contiguous());
      payloads.push_back(p.narrow(1, 4, 2 * d));
    }

    // Select, per (batch row, KV head), what a query at `begin` can still see, and lay it out (header
    // comment).
    const int64_t window_len = full ? begin : std::min(window, begin);
    const int64_t cut = begin - window_len;  // positions < cut are globals or live locals, compacted
    std::vector<int64_t> last_global(b * h, -1), count(b * h, 0);
    for (int q = 0; q < rank; ++q) {
      auto m = metas[q].accessor<int32_t, 2>();
      for (int64_t e = 0; e < m.size(0); ++e) {
        const int64_t bh = m[e][0] * h + m[e][1];
        if (m[e][3] == kGlobal) last_global[bh] = std::max<int64_t>(last_global[bh], m[e][2]);
      }
    }
    auto compacted = [&](int64_t bh, int64_t pos, int64_t type) {
      return pos < cut && (type == kGlobal || (type == kLocal && pos > last_global[bh]));
    };
    for (int q = 0; q < rank; ++q) {
      auto m = metas[q].accessor<int32_t, 2>();
      for (int64_t e = 0; e < m.size(0); ++e) {
        const int64_t bh = m[e][0] * h + m[e][1];
        if (compacted(bh, m[e][2], m[e][3])) ++count[bh];
      }
    }
    const int64_t pad_to = b * h == 0 ? 0 : *std::max_element(count.begin(), count.end());
    const int64_t prefix = pad_to + window_len;
    auto plan = c10::make_intrusive<ExchangePlan>();
    int64_t n_used = 0;
    for (int q = 0; q < rank; ++q) n_used += metas[q].size(0);
    at::Tensor slot_source = at::full({b * h * prefix}, n_used, at::kLong);
    at::Tensor slot_type = at::full({b * h * prefix}, kSliding, at::kLong);  // pads: expired sliding tokens
    auto source = slot_source.accessor<int64_t, 1>();
    auto stype = slot_type.accessor<int64_t, 1>();
    std::vector<int64_t> fill(b * h);
    for (int64_t bh = 0; bh < b * h; ++bh) fill[bh] = pad_to - count[bh];
    int64_t global_index = 0, used_entries = 0;
    for (int q = 0; q < rank; ++q) {
      auto m = metas[q].accessor<int32_t, 2>();
      plan->used_rows.push_back(m.size(0));
      for (int64_t e = 0; e < m.size(0); ++e, ++global_index) {
        const int64_t bh = m[e][0] * h + m[e][1], pos = m[e][2], type = m[e][3];
        int64_t slot;
        if (pos >= cut) {
          slot = pad_to + pos - cut;
        } else if (compacted(bh, pos, type)) {
          slot = fill[bh]++;
        } else {
          continue;  // cut off by a later global: invisible to this chunk
        }
        source[bh * prefix + slot] = global_index;
        stype[bh * prefix + slot] = type;
        ++used_entries;
      }
    }
    for (int64_t bh = 0; bh < b * h; ++bh) {
      for (int64_t slot = pad_to; slot < prefix; ++slot) {
        TORCH_INTERNAL_ASSERT(source[bh * prefix + slot] < n_used, "sequence parallel: window position ",
                              cut + slot - pad_to, " of head ", bh, " was not received");
      }
    }

    std::vector<at::Tensor> used(payloads.begin(), payloads.begin() + rank);
    used.push_back(at::zeros({1, 2 * d}, packet.options()));
    slot_source = slot_source.to(packet.device());
    slot_type = slot_type.to(packet.device());
    at::Tensor gathered = at::cat(used, 0).index_select(0, slot_source).view({b, h, prefix, 2 * d});
    at::Tensor k_pre = gathered.narrow(-1, 0, d).contiguous();
    at::Tensor v_pre = gathered.narrow(-1, d, d).contiguous();
    at::Tensor onehot_pre =
        at::one_hot(slot_type, kNumTokenTypes).to(onehot.scalar_type()).view({b, h, prefix, 3});

    SpLayerStats& st = sp->StatsFor(static_cast<int>(layer));
    st.calls += 1;
    st.packet_entries += rows.numel();
    st.bytes_sent += Bytes(packet);
    for (int q = 0; q < size; ++q) {
      if (q != rank) st.bytes_received += Bytes(packets[q]);
    }
    st.prefix_entries += used_entries;
    st.prefix_slots += prefix;

    plan->sp = sp;
    plan->layer = static_cast<int>(layer);
    plan->batch = b;
    plan->heads = h;
    plan->chunk = tc;
    plan->head_dim = d;
    plan->prefix = prefix;
    plan->own_rows = rows;
    plan->slot_source = slot_source;
    plan->n_used = n_used;
    plan->float_options = packet.options();
    ctx->saved_data["plan"] = c10::IValue::make_capsule(plan);
    st.comm_seconds += SecondsSince(start);
    return {k_pre, v_pre, onehot_pre};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto start = std::chrono::steady_clock::now();
    auto holder = ctx->saved_data["plan"].toCapsule();
    const auto& plan = *static_cast<ExchangePlan*>(holder.get());
    Communicator& comm = plan.sp->comm();
    const int rank = comm.rank(), size = comm.size();
    const int64_t b = plan.batch, h = plan.heads, d = plan.head_dim, width = 2 * d + kNumTokenTypes;
    const at::TensorOptions fo = plan.float_options;
    auto or_zeros = [&](const at::Tensor& g, int64_t last) {
      return g.defined() ? g.to(fo.dtype()) : at::zeros({b, h, plan.prefix, last}, fo);
    };
    at::Tensor g =
        at::cat({or_zeros(grads[0], d), or_zeros(grads[1], d), or_zeros(grads[2], kNumTokenTypes)}, -1)
            .reshape({b * h * plan.prefix, width});
    // Sum every slot's gradient into the received entry it came from (pads go to the extra last row).
    at::Tensor per_entry = at::zeros({plan.n_used + 1, width}, fo).index_add_(0, plan.slot_source, g);
    std::vector<at::Tensor> send;
    int64_t offset = 0;
    for (int q = 0; q < size; ++q) {
      const int64_t n = q < rank ? plan.used_rows[q] : 0;
      send.push_back(per_entry.narrow(0, offset, n).contiguous());
      offset += n;
    }
    std::vector<at::Tensor> recv;
    ThrowIfError(comm.AllToAllV(send, &recv), "AllToAllV (KV gradients)");
    const int64_t n_own = plan.own_rows.numel();
    at::Tensor own = at::zeros({n_own, width}, fo);
    for (int q = rank + 1; q < size; ++q) {
      TORCH_INTERNAL_ASSERT(recv[q].size(0) == n_own, "sequence parallel: rank ", q, " returned ",
                            recv[q].size(0), " gradient rows for ", n_own, " sent entries");
      own += recv[q];
    }
    const int64_t flat = b * h * plan.chunk;
    at::Tensor dk = at::zeros({flat, d}, fo).index_add_(0, plan.own_rows, own.narrow(1, 0, d));
    at::Tensor dv = at::zeros({flat, d}, fo).index_add_(0, plan.own_rows, own.narrow(1, d, d));
    at::Tensor dt =
        at::zeros({flat, kNumTokenTypes}, fo).index_add_(0, plan.own_rows, own.narrow(1, 2 * d, 3));

    SpLayerStats& st = plan.sp->StatsFor(plan.layer);
    for (int q = 0; q < size; ++q) {
      st.bytes_sent += Bytes(send[q]);
      if (q != rank) st.bytes_received += Bytes(recv[q]);
    }
    st.comm_seconds += SecondsSince(start);
    return {dk.view({b, h, plan.chunk, d}),
            dv.view({b, h, plan.chunk, d}),
            dt.view({b, h, plan.chunk, kNumTokenTypes}),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

// Identity in the forward; adds a constant to the gradient (the regulariser of docs/method.md 5.4 is a
// gradient term, not a loss term).
class AddToGradientFunction : public torch::autograd::Function<AddToGradientFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& add) {
    ctx->saved_data["add"] = add;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor add = ctx->saved_data["add"].toTensor();
    at::Tensor g = grads[0].defined() ? grads[0] + add : add.clone();
    return {g, at::Tensor()};
  }
};

}  // namespace

std::pair<int64_t, int64_t> ChunkBounds(int64_t length, int size, int rank) {
  return {length * rank / size, length * (rank + 1) / size};
}

SequenceParallel::SequenceParallel(Communicator& sp, SpExchange mode) : comm_(sp), mode_(mode) {}

void SequenceParallel::SetSequenceLength(int64_t length) {
  TORCH_CHECK(length >= comm_.size(), "sequence parallel: a sequence of ", length,
              " tokens cannot be split over ", comm_.size(),
              " ranks; lower parallel.sp or raise model.context_length");
  TORCH_CHECK(length < (int64_t{1} << 31), "sequence parallel: model.context_length = ", length,
              " is too long (positions travel as int32); lower model.context_length below 2^31");
  length_ = length;
  std::tie(begin_, end_) = ChunkBounds(length, comm_.size(), comm_.rank());
}

SpLayerStats& SequenceParallel::StatsFor(int layer) {
  if (!count_stats_) return uncounted_;
  if (static_cast<int>(stats_.size()) <= layer) stats_.resize(layer + 1);
  return stats_[layer];
}

at::Tensor SequenceParallel::Attend(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& types, const AttentionOptions& options) {
  const int64_t b = k.size(0), h = k.size(1), tc = k.size(2), d = k.size(3);
  TORCH_CHECK(tc == end_ - begin_, "sequence parallel: layer ", layer, " got ", tc, " positions, the chunk [",
              begin_, ", ", end_, ") of rank ", comm_.rank(), " has ", end_ - begin_);
  const bool dense = !types.defined();
  TORCH_CHECK(
      dense || mode_ == SpExchange::kFull || options.grad_mode != MaskGradMode::kUnmasked,
      "sequence parallel: mask-gradient mode `unmasked` needs every earlier key (the unmasked softmax); "
      "use the full exchange (parallel.sp_exchange = FULL) or mode `clipped`");
  at::Tensor onehot = types;
  if (dense) {  // every token global: the exchange moves the whole prefix
    onehot = at::zeros({b, h, tc, kNumTokenTypes}, k.options());
    onehot.select(-1, kGlobal).fill_(1.0);
  }
  const int64_t window = dense ? length_ : options.window;
  torch::autograd::variable_list pre = KvExchangeFunction::apply(k, v, onehot, this, layer, window);
  const int64_t prefix = pre[0].size(2);

  AttentionOptions kernel = options;
  kernel.lambda = 0.0;  // added below at absolute positions
  kernel.query_begin =
      prefix;  // the prefix rows are never read (the fused kernel skips whole blocks of them)
  at::Tensor own_types = types;
  if (!dense && options.lambda != 0.0 && at::GradMode::is_enabled() && types.requires_grad()) {
    // The first global of every chunk, so a local near this chunk's end knows its next global e_j.
    at::Tensor int_types = types.detach().argmax(-1);
    const at::TensorOptions long_options = int_types.options();
    at::Tensor pos = at::arange(tc, long_options).view({1, 1, tc}) + begin_;
    at::Tensor first =
        at::where(int_types == kGlobal, pos, at::full({}, length_, long_options)).amin(-1).contiguous();
    at::Tensor all = at::empty({comm_.size() * b * h}, long_options);
    ThrowIfError(comm_.AllGather(first.reshape({-1}), all), "AllGather (first global per chunk)");
    at::Tensor after = at::full({b * h}, length_, long_options);
    for (int r = comm_.rank() + 1; r < comm_.size(); ++r)
      after = at::minimum(after, all.narrow(0, r * b * h, b * h));
    after = at::clamp_max(after, length_ - 1).view({b, h});
    at::Tensor reg =
        SparsityRegulariserGradient(int_types, options.lambda, q.size(1) / h, begin_, length_, after);
    own_types = AddToGradientFunction::apply(types, reg.to(types.options()));
  }
  at::Tensor k_ext = at::cat({pre[0].to(k.scalar_type()), k}, 2);
  at::Tensor v_ext = at::cat({pre[1].to(v.scalar_type()), v}, 2);
  // Dense: only the chunk's rows against prefix + chunk. NAtS: the kernels take square problems, so the
  // prefix rows run with zero queries; their outputs are dropped and get no gradient, so they change nothing,
  // and the fused kernel skips the query blocks that lie wholly inside the prefix
  // (AttentionOptions::query_begin).
  if (dense && options.impl != AttentionImpl::kFused) return DenseCausalAttention(q, k_ext, v_ext);
  at::Tensor q_ext = at::cat({at::zeros({b, q.size(1), prefix, d}, q.options()), q}, 2);
  if (dense) return FusedCausalAttention(q_ext, k_ext, v_ext, prefix).narrow(2, prefix, tc);
  return Attention(q_ext, k_ext, v_ext, at::cat({pre[2], own_types}, 2), kernel).narrow(2, prefix, tc);
}

}  // namespace nats::parallel
