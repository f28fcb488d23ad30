// The one-pass Q/K/V split + RoPE of nats/qkv_heads.h, with its autograd backward.
#include "nats/qkv_heads.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "nats/transformer.h"

namespace nats {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Layout {
  int64_t b, t, h, h_kv, d, width;  // width = (h + 2 h_kv) d
};

// Forward (inverse = false): dst = R(src) for q and k heads, dst = src for v. Backward (inverse = true): the
// transposed map, from the head-major gradients back into one row-major dqkv. `c`, `s` [T, D/2] or null.
template <typename T>
void Move(const Layout& l, const T* c, const T* s, bool inverse, T* rows, T* q, T* k, T* v) {
  const int64_t half = l.d / 2;
  at::parallel_for(0, l.b * l.t, 64, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t bi = bt / l.t, ti = bt % l.t;
      T* row = rows + bt * l.width;
      auto head = [&](T* base, int64_t heads, int64_t hh) {
        return base + ((bi * heads + hh) * l.t + ti) * l.d;
      };
      auto rotate = [&](T* packed, T* split) {
        if (c == nullptr) {
          if (inverse) {
            std::copy(split, split + l.d, packed);
          } else {
            std::copy(packed, packed + l.d, split);
          }
          return;
        }
        const T* cr = c + ti * half;
        const T* sr = s + ti * half;
        for (int64_t i = 0; i < half; ++i) {
          if (inverse) {  // d x1 = g1 c + g2 s, d x2 = g2 c - g1 s
            const T g1 = split[i], g2 = split[half + i];
            packed[i] = g1 * cr[i] + g2 * sr[i];
            packed[half + i] = g2 * cr[i] - g1 * sr[i];
          } else {
            const T x1 = packed[i], x2 = packed[half + i];
            split[i] = x1 * cr[i] - x2 * sr[i];
            split[half + i] = x2 * cr[i] + x1 * sr[i];
          }
        }
      };
      for (int64_t hh = 0; hh < l.h; ++hh) rotate(row + hh * l.d, head(q, l.h, hh));
      for (int64_t hh = 0; hh < l.h_kv; ++hh) rotate(row + (l.h + hh) * l.d, head(k, l.h_kv, hh));
      for (int64_t hh = 0; hh < l.h_kv; ++hh) {
        T* packed = row + (l.h + l.h_kv + hh) * l.d;
        T* split = head(v, l.h_kv, hh);
        if (inverse) {
          std::copy(split, split + l.d, packed);
        } else {
          std::copy(packed, packed + l.d, split);
        }
      }
    }
  });
}

template <typename T>
void MoveTyped(const Layout& l, const at::Tensor& c, const at::Tensor& s, bool inverse, at::Tensor& rows,
               at::Tensor& q, at::Tensor& k, at::Tensor& v) {
  // Empty tables (not undefined ones: autograd inputs must be defined) mean no rotation.
  Move<T>(l, c.numel() > 0 ? c.data_ptr<T>() : nullptr, s.numel() > 0 ? s.data_ptr<T>() : nullptr, inverse,
          rows.data_ptr<T>(), q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>());
}

void Run(const Layout& l, const at::Tensor& c, const at::Tensor& s, bool inverse, at::Tensor& rows,
         at::Tensor& q, at::Tensor& k, at::Tensor& v) {
  if (rows.scalar_type() == at::kDouble) {
    MoveTyped<double>(l, c, s, inverse, rows, q, k, v);
  } else {
    MoveTyped<float>(l, c, s, inverse, rows, q, k, v);
  }
}

class SplitQkvHeadsFunction : public torch::autograd::Function<SplitQkvHeadsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv, int64_t n_head, int64_t n_kv,
                               int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin) {
    const Layout l{qkv.size(0), qkv.size(1), n_head, n_kv, head_dim, qkv.size(2)};
    at::Tensor rows = qkv.contiguous();
    at::Tensor q = at::empty({l.b, l.h, l.t, l.d}, rows.options());
    at::Tensor k = at::empty({l.b, l.h_kv, l.t, l.d}, rows.options());
    at::Tensor v = at::empty({l.b, l.h_kv, l.t, l.d}, rows.options());
    Run(l, cos, sin, /*inverse=*/false, rows, q, k, v);
    ctx->saved_data["layout"] = std::vector<int64_t>{l.b, l.t, l.h, l.h_kv, l.d, l.width};
    ctx->save_for_backward({cos, sin});
    return {q, k, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<int64_t> x = ctx->saved_data["layout"].toIntVector();
    const Layout l{x[0], x[1], x[2], x[3], x[4], x[5]};
    const variable_list saved = ctx->get_saved_variables();
    const at::TensorOptions options = (grads[0].defined()   ? grads[0]
                                       : grads[2].defined() ? grads[2]
                                                            : grads[1])
                                          .options();
    auto dense = [&](const at::Tensor& g, int64_t heads) {
      return g.defined() ? g.contiguous() : at::zeros({l.b, heads, l.t, l.d}, options);
    };
    at::Tensor gq = dense(grads[0], l.h), gk = dense(grads[1], l.h_kv), gv = dense(grads[2], l.h_kv);
    at::Tensor dqkv = at::empty({l.b, l.t, l.width}, gq.options());
    Run(l, saved[0], saved[1], /*inverse=*/true, dqkv, gq, gk, gv);
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

QkvHeads SplitQkvHeadsReference(const at::Tensor& qkv, int64_t n_head, int64_t n_kv_head, int64_t head_dim,
                                const at::Tensor& cos, const at::Tensor& sin, int64_t offset) {
  const int64_t b = qkv.size(0), t = qkv.size(1);
  QkvHeads p;
  p.q = qkv.narrow(-1, 0, n_head * head_dim).view({b, t, n_head, head_dim}).transpose(1, 2);
  p.k = qkv.narrow(-1, n_head * head_dim, n_kv_head * head_dim)
            .view({b, t, n_kv_head, head_dim})
            .transpose(1, 2);
  p.v = qkv.narrow(-1, (n_head + n_kv_head) * head_dim, n_kv_head * head_dim)
            .view({b, t, n_kv_head, head_dim})
            .transpose(1, 2);
  if (cos.defined()) {
    p.q = ApplyRope(p.q, cos, sin, offset);
    p.k = ApplyRope(p.k, cos, sin, offset);
  }
  return p;
}

QkvHeads SplitQkvHeads(const at::Tensor& qkv, int64_t n_head, int64_t n_kv_head, int64_t head_dim,
                       const at::Tensor& cos, const at::Tensor& sin, int64_t offset) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) == (n_head + 2 * n_kv_head) * head_dim, "qkv ", qkv.sizes(),
              " must be [B, T, (n_head + 2 n_kv_head) head_dim] with n_head ", n_head, ", n_kv_head ",
              n_kv_head, ", head_dim ", head_dim);
  const bool supported = qkv.is_cpu() &&
                         (qkv.scalar_type() == at::kFloat || qkv.scalar_type() == at::kDouble) &&
                         head_dim % 2 == 0;
  if (!supported) return SplitQkvHeadsReference(qkv, n_head, n_kv_head, head_dim, cos, sin, offset);
  at::Tensor c = at::empty({0}, qkv.options().requires_grad(false)), s = c;
  if (cos.defined()) {
    c = cos.narrow(0, offset, qkv.size(1)).to(qkv.scalar_type()).contiguous();
    s = sin.narrow(0, offset, qkv.size(1)).to(qkv.scalar_type()).contiguous();
  }
  variable_list out = SplitQkvHeadsFunction::apply(qkv, n_head, n_kv_head, head_dim, c, s);
  return {out[0], out[1], out[2]};
}

}  // namespace nats
