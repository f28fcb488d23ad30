#include "runtime/distill_loss.h"

#include <torch/torch.h>

namespace nats {
namespace {

// Sets the model's dense attention for one scope, whatever leaves it.
class DenseAttentionScope {
 public:
  explicit DenseAttentionScope(Transformer& model) : model_(model) { model_->SetDenseAttention(true); }
  ~DenseAttentionScope() { model_->SetDenseAttention(false); }
  DenseAttentionScope(const DenseAttentionScope&) = delete;
  DenseAttentionScope& operator=(const DenseAttentionScope&) = delete;

 private:
  Transformer& model_;
};

}  // namespace

DistillLoss ComputeDistillLoss(Transformer& model, const at::Tensor& tokens, double share, double kl_weight) {
  at::Tensor teacher;
  {
    torch::NoGradGuard no_grad;
    DenseAttentionScope dense(model);
    teacher = model->FinalHidden(tokens);
  }
  at::Tensor student = model->FinalHidden(tokens);
  at::Tensor mse = at::mse_loss(student, teacher);  // mean over B x T x d_model
  DistillLoss out;
  out.student_hidden = student;
  out.loss = mse * share;
  out.mse = out.loss.item<double>();
  if (kl_weight > 0) {
    // KL(teacher || student) per token, averaged over tokens; the [B, T, vocab] logits are materialised here
    // (only with a KL weight), in float for the log-softmax's sake whatever the model's dtype.
    at::Tensor teacher_logp, student_logp = at::log_softmax(model->Head(student).to(at::kFloat), -1);
    {
      torch::NoGradGuard no_grad;
      teacher_logp = at::log_softmax(model->Head(teacher).to(at::kFloat), -1);
    }
    at::Tensor kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean() * share;
    out.kl = kl.item<double>();
    out.loss = out.loss + kl_weight * kl;
  }
  return out;
}

}  // namespace nats
