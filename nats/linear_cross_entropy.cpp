// Fused linear + cross-entropy (see the header): logits -> per-row-block softmax - onehot in place.
#include "nats/linear_cross_entropy.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <vector>

namespace nats {
namespace {

// Rows per block: 4 x 50304 floats = 800 KB, which stays in L2 between the passes over the block.
constexpr int64_t kRowsPerBlock = 4;

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& targets, bool whole_tensor) {
    const int64_t n = x.size(0), v = weight.size(0);
    at::Tensor t = targets.to(at::kLong).contiguous();
    if (n > 0) {
      TORCH_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < v,
                  "LinearCrossEntropy: targets must be in [0, ", v, ")");
    }
    ctx->saved_data["n"] = n;
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
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& grad = saved[2];
    const int64_t n = ctx->saved_data["n"].toInt();
    // d(mean loss)/dlogits = (softmax - onehot) / N, times the incoming scalar.
    const at::Tensor scale = grad_out[0] / static_cast<double>(std::max<int64_t>(n, 1));
    // grad is fp32 on the whole-tensor path; the gradients take their inputs' dtypes.
    at::Tensor dx = at::mm(grad, weight.to(grad.scalar_type())).mul_(scale).to(x.scalar_type());
    at::Tensor dw = at::mm(grad.t(), x.to(grad.scalar_type())).mul_(scale).to(weight.scalar_type());
    return {dx, dw, at::Tensor(), at::Tensor()};
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
  const bool whole_tensor =
      path == LinearCrossEntropyPath::kWholeTensor || (path == LinearCrossEntropyPath::kAuto && !x.is_cpu());
  return LinearCrossEntropyFunction::apply(x, weight, targets.reshape({-1}), whole_tensor);
}

}  // namespace nats
