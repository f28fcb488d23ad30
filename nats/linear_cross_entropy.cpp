// Fused linear + cross-entropy (see the header): logits -> per-row-block softmax - onehot in place.
#include "nats/linear_cross_entropy.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <vector>

namespace nats {
namespace {

// Rows per block: 4 x 50304 floats = 800 KB, which stays in L2 between the passes over the block.
constexpr int64_t kRowsPerBlock = 4;
// Rows per chunk of the chunked path: 1024 x 50304 fp32 logits = 206 MB at a time, enough rows for the GPU's
// matmuls to run near peak.
constexpr int64_t kChunkRows = 1024;

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& targets, bool whole_tensor,
                            bool chunked) {
    const int64_t n = x.size(0), v = weight.size(0);
    at::Tensor t = targets.to(at::kLong).contiguous();
    if (n > 0) {
      TORCH_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < v,
                  "LinearCrossEntropy: targets must be in [0, ", v, ")");
    }
    ctx->saved_data["n"] = n;
    ctx->saved_data["chunked"] = chunked;
    if (chunked) {
      // Row chunks of the logits: each chunk's gradient softmax - onehot is turned into its share of dx and
      // dW at once and dropped, so no [N, V] tensor ever exists (the backward only scales the saved dx, dW).
      // Matmuls in x's dtype (bf16 under autocast), the loss math and the dW accumulation in fp32.
      const at::ScalarType mm_type = x.scalar_type();
      const at::ScalarType acc_type = mm_type == at::kDouble ? at::kDouble : at::kFloat;
      const at::Tensor w = weight.to(mm_type);
      at::Tensor dx = at::empty(x.sizes(), x.options().dtype(acc_type));
      at::Tensor dw = at::zeros(weight.sizes(), weight.options().dtype(acc_type));
      at::Tensor loss = at::zeros({}, x.options().dtype(acc_type));
      for (int64_t r0 = 0; r0 < n; r0 += kChunkRows) {
        const int64_t rows = std::min(kChunkRows, n - r0);
        const at::Tensor xc = x.narrow(0, r0, rows).to(mm_type);
        at::Tensor z = at::mm(xc, w.t()).to(acc_type);
        const at::Tensor idx = t.narrow(0, r0, rows).unsqueeze(1);
        const at::Tensor lse = at::logsumexp(z, 1, /*keepdim=*/true);
        loss.add_((lse - z.gather(1, idx)).sum());
        z.sub_(lse).exp_();
        z.scatter_add_(1, idx, at::full({rows, 1}, -1.0, z.options()));  // softmax - onehot
        const at::Tensor g = z.to(mm_type);
        dx.narrow(0, r0, rows).copy_(at::mm(g, w));
        dw.add_(at::mm(g.t(), xc).to(acc_type));
      }
      ctx->save_for_backward({dx, dw});
      ctx->saved_data["x_dtype"] = x.scalar_type();
      ctx->saved_data["w_dtype"] = weight.scalar_type();
      return (loss / static_cast<double>(std::max<int64_t>(n, 1))).to(x.scalar_type());
    }
    if (whole_tensor) {
      // At least fp32 (bf16 logits come from an autocast matmul): a bf16 logsumexp over 50k entries would
      // lose the loss's digits.
      at::Tensor grad = at::mm(x, weight.t());
      if (grad.scalar_type() != at::kDouble) grad = grad.to(at::kFloat);
      grad = grad.contiguous();
      at::Tensor lse = at::logsumexp(grad, 1, /*keepdim=*/true);
      at::Tensor idx = t.unsqueeze(1);
      at::Tensor loss = (lse - grad.gather(1, idx)).sum() / static_cast<double>(std::max<int64_t>(n, 1));
      grad.sub_(lse).exp_();
      grad.scatter_add_(1, idx, at::full({n, 1}, -1.0, grad.options()));  // softmax - onehot
      ctx->save_for_backward({x, weight, grad});
      return loss.to(x.scalar_type());
    }
    at::Tensor grad = at::mm(x, weight.t()).contiguous();  // the logits, becoming dL/dlogits * N below
    const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
    std::vector<double> block_loss(blocks, 0.0);  // summed in block order: deterministic for any thread count
    const int64_t* tp = t.data_ptr<int64_t>();
    at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t r0 = blk * kRowsPerBlock, rows = std::min(kRowsPerBlock, n - r0);
        at::Tensor z = grad.narrow(0, r0, rows);
        at::Tensor tb = t.narrow(0, r0, rows).unsqueeze(1);
        at::Tensor lse = at::logsumexp(z, 1, /*keepdim=*/true);
        block_loss[blk] = (lse.squeeze(1) - z.gather(1, tb).squeeze(1)).sum().item<double>();
        z.sub_(lse).exp_();  // softmax
        AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "LinearCrossEntropy", [&] {
          scalar_t* zp = z.data_ptr<scalar_t>();
          for (int64_t r = 0; r < rows; ++r) zp[r * v + tp[r0 + r]] -= scalar_t(1);  // - onehot
        });
      }
    });
    double total = 0;
    for (double l : block_loss) total += l;
    ctx->save_for_backward({x, weight, grad});
    return at::full({}, n > 0 ? total / static_cast<double>(n) : 0.0, x.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    if (ctx->saved_data["chunked"].toBool()) {
      const int64_t n_rows = ctx->saved_data["n"].toInt();
      const at::Tensor scale =
          grad_out[0].to(saved[0].scalar_type()) / static_cast<double>(std::max<int64_t>(n_rows, 1));
      return {(saved[0] * scale).to(ctx->saved_data["x_dtype"].toScalarType()),
              (saved[1] * scale).to(ctx->saved_data["w_dtype"].toScalarType()), at::Tensor(), at::Tensor(),
              at::Tensor()};
    }
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& grad = saved[2];
    const int64_t n = ctx->saved_data["n"].toInt();
    // d(mean loss)/dlogits = (softmax - onehot) / N, times the incoming scalar.
    const at::Tensor scale = grad_out[0] / static_cast<double>(std::max<int64_t>(n, 1));
    // grad is fp32 on the whole-tensor path; the gradients take their inputs' dtypes.
    at::Tensor dx = at::mm(grad, weight.to(grad.scalar_type())).mul_(scale).to(x.scalar_type());
    at::Tensor dw = at::mm(grad.t(), x.to(grad.scalar_type())).mul_(scale).to(weight.scalar_type());
    return {dx, dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor LinearCrossEntropy(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& targets,
                              LinearCrossEntropyPath path) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "LinearCrossEntropy: x [N, d] ", x.sizes(), " and weight [V, d] ", weight.sizes(),
              " do not match");
  TORCH_CHECK(targets.numel() == x.size(0), "LinearCrossEntropy: ", targets.numel(), " targets for ",
              x.size(0), " rows");
  const bool chunked =
      path == LinearCrossEntropyPath::kChunked || (path == LinearCrossEntropyPath::kAuto && !x.is_cpu());
  const bool whole_tensor = path == LinearCrossEntropyPath::kWholeTensor;
  return LinearCrossEntropyFunction::apply(x, weight, targets.reshape({-1}), whole_tensor, chunked);
}

}  // namespace nats
