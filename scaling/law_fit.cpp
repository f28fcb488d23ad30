#include "scaling/law_fit.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace nats::scaling {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr double kInf = std::numeric_limits<double>::infinity();
// Parameter vector layout: a, b, e, alpha, beta (Approach 3), then K, g (KV extension; gamma = exp(g)).
constexpr int kLawParams = 5;
constexpr int kKvParams = 7;
// L-BFGS iterations per start: the runs of our tests stop after 30-100 (measured).
constexpr int kMaxIterations = 400;
// A KV term may push the prediction to zero or below while the line search explores; the log then needs a
// floor. The floor is far below any real loss, so it never binds at an optimum.
constexpr double kMinLoss = 1e-6;
// KV extension starts: K in nats (losses are O(1)), both signs; gamma from concave to sharply convex.
constexpr double kKvGridK[] = {-0.5, -0.2, -0.05, 0.0, 0.05, 0.2, 0.5};
constexpr double kKvGridGamma[] = {0.25, 0.5, 1.0, 2.0, 4.0};
constexpr int kKvLbfgsStarts = 4;

torch::TensorOptions Float64() { return torch::TensorOptions().dtype(torch::kFloat64); }

torch::Tensor Vector(const std::vector<double>& values) {
  return torch::tensor(at::ArrayRef<double>(values), Float64());
}

// The observations as the objective needs them. kv_mask: 1 where kappa < 1 (the KV term is present);
// kv_log_gap: log(1 - kappa) there and 0 elsewhere, so that exp(gamma * kv_log_gap) never sees log(0), whose
// gradient with respect to gamma would be 0 * inf = NaN even where the mask zeroes the term.
struct FitData {
  torch::Tensor log_n, log_d, log_loss, kv_mask, kv_log_gap;
  int64_t rows = 0;
};

FitData MakeFitData(const std::vector<double>& params, const std::vector<double>& tokens,
                    const std::vector<double>& loss, const std::vector<double>* kv) {
  FitData data;
  data.rows = static_cast<int64_t>(params.size());
  data.log_n = Vector(params).log();
  data.log_d = Vector(tokens).log();
  data.log_loss = Vector(loss).log();
  if (kv) {
    torch::Tensor gap = 1.0 - Vector(*kv);
    data.kv_mask = (gap > 0).to(torch::kFloat64);
    data.kv_log_gap = torch::where(gap > 0, gap.clamp_min(1e-300).log(), torch::zeros_like(gap));
  }
  return data;
}

// log L_hat for a batch of parameter vectors theta [G, 5 or 7]: [G, rows].
torch::Tensor LogPrediction(const torch::Tensor& theta, const FitData& data) {
  auto column = [&](int i) { return theta.select(1, i).unsqueeze(1); };
  const torch::Tensor a = column(0), b = column(1), e = column(2), alpha = column(3), beta = column(4);
  const torch::Tensor terms =
      torch::stack({a - alpha * data.log_n, b - beta * data.log_d, e.expand({theta.size(0), data.rows})}, 2);
  // LSE keeps the three terms in log space: A / N^alpha spans tens of orders of magnitude over the grid.
  const torch::Tensor log_base = torch::logsumexp(terms, 2);
  if (theta.size(1) == kLawParams) return log_base;
  const torch::Tensor kv_term = column(5) * data.kv_mask * torch::exp(column(6).exp() * data.kv_log_gap);
  return torch::log(torch::clamp_min(log_base.exp() + kv_term, kMinLoss));
}

torch::Tensor Huber(const torch::Tensor& r, double delta) {
  const torch::Tensor magnitude = r.abs();
  return torch::where(magnitude <= delta, 0.5 * r * r, delta * (magnitude - 0.5 * delta));
}

// sum_i weight_i Huber(log L_hat_i - log L_i) per parameter vector: [G].
torch::Tensor Objective(const torch::Tensor& theta, const FitData& data, const torch::Tensor& weights,
                        double delta) {
  return (Huber(LogPrediction(theta, data) - data.log_loss, delta) * weights).sum(1);
}

// Objective() at one parameter vector theta [1, P] and its gradient [1, P], derived by hand (no autograd):
// d log L_hat / d term_k is term k's softmax share; Huber's derivative is clamp(r, -delta, delta).
std::pair<torch::Tensor, torch::Tensor> ObjectiveWithGradient(const torch::Tensor& theta, const FitData& data,
                                                              const torch::Tensor& weights, double delta) {
  torch::NoGradGuard no_grad;
  auto column = [&](int i) { return theta.select(1, i).unsqueeze(1); };
  const torch::Tensor a = column(0), b = column(1), e = column(2), alpha = column(3), beta = column(4);
  const torch::Tensor terms =
      torch::stack({a - alpha * data.log_n, b - beta * data.log_d, e.expand({theta.size(0), data.rows})}, 2);
  const torch::Tensor log_base = torch::logsumexp(terms, 2);
  const torch::Tensor share = torch::exp(terms - log_base.unsqueeze(2));
  torch::Tensor log_prediction = log_base, per_log_base, per_k, per_g;
  if (theta.size(1) == kKvParams) {
    const torch::Tensor k = column(5), gamma = column(6).exp();
    const torch::Tensor base = log_base.exp(), power = data.kv_mask * torch::exp(gamma * data.kv_log_gap);
    const torch::Tensor raw = base + k * power;
    const torch::Tensor active = (raw > kMinLoss).to(torch::kFloat64);  // clamp_min's gradient is 0 below
    const torch::Tensor prediction = torch::clamp_min(raw, kMinLoss);
    log_prediction = prediction.log();
    per_log_base = active * base / prediction;
    per_k = active * power / prediction;
    per_g = per_k * k * data.kv_log_gap * gamma;
  }
  const torch::Tensor r = log_prediction - data.log_loss;
  const torch::Tensor value = (Huber(r, delta) * weights).sum();
  const torch::Tensor slope = torch::clamp(r, -delta, delta) * weights;
  const torch::Tensor by_base = per_log_base.defined() ? slope * per_log_base : slope;
  const torch::Tensor by_n = by_base * share.select(2, 0), by_d = by_base * share.select(2, 1);
  std::vector<torch::Tensor> parts = {by_n.sum(1), by_d.sum(1), (by_base * share.select(2, 2)).sum(1),
                                      -(by_n * data.log_n).sum(1), -(by_d * data.log_d).sum(1)};
  if (per_k.defined()) {
    parts.push_back((slope * per_k).sum(1));
    parts.push_back((slope * per_g).sum(1));
  }
  return {value, torch::stack(parts, 1)};
}

struct Minimum {
  std::vector<double> theta;
  double objective = kInf;  // +inf when the run ended non-finite
};

Minimum RunLbfgs(const std::vector<double>& start, const FitData& data, const torch::Tensor& weights,
                 double delta) {
  // A leaf that requires grad, as the optimizer expects of its parameters; the closure fills .grad itself.
  torch::Tensor theta = Vector(start).view({1, -1}).clone().requires_grad_(true);
  torch::optim::LBFGS optimizer({theta}, torch::optim::LBFGSOptions(1.0)
                                             .max_iter(kMaxIterations)
                                             .max_eval(kMaxIterations * 5 / 4)
                                             .tolerance_grad(1e-10)
                                             .tolerance_change(1e-14)
                                             .history_size(20)
                                             .line_search_fn(std::string("strong_wolfe")));
  // The objective divided by delta: with delta = 1e-3 most residuals sit on Huber's linear part, whose slope
  // is delta, and L-BFGS's absolute tolerances would stop it early on gradients that small. Scaling does not
  // move the minimum.
  const double scale = 1.0 / delta;
  // The hand-derived gradient: autograd on these [1, rows] tensors spent two thirds of the fit's time in the
  // closure (measured); LawObjective(..., autograd = true) is its reference in
  // tests/scaling/law_fit_test.cpp.
  auto closure = [&] {
    auto [value, gradient] = ObjectiveWithGradient(theta.detach(), data, weights, delta);
    theta.mutable_grad() = gradient * scale;
    return value * scale;
  };
  optimizer.step(closure);
  Minimum result;
  torch::NoGradGuard no_grad;
  const double objective = Objective(theta, data, weights, delta).item<double>();
  const torch::Tensor flat = theta.detach().reshape({-1}).contiguous();
  result.theta.assign(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
  const bool finite = std::isfinite(objective) && std::all_of(result.theta.begin(), result.theta.end(),
                                                              [](double v) { return std::isfinite(v); });
  result.objective = finite ? objective : kInf;
  return result;
}

// Chinchilla's initialisation grid (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024): [4500, 5].
torch::Tensor ChinchillaGrid() {
  std::vector<double> rows;
  for (double alpha : {0.0, 0.5, 1.0, 1.5, 2.0})
    for (double beta : {0.0, 0.5, 1.0, 1.5, 2.0})
      for (double e : {-1.0, -0.5, 0.0, 0.5, 1.0})
        for (double a : {0.0, 5.0, 10.0, 15.0, 20.0, 25.0})
          for (double b : {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}) rows.insert(rows.end(), {a, b, e, alpha, beta});
  return Vector(rows).view({-1, kLawParams});
}

torch::Tensor KvGrid(const std::vector<double>& base) {
  std::vector<double> rows;
  for (double k : kKvGridK)
    for (double gamma : kKvGridGamma) {
      rows.insert(rows.end(), base.begin(), base.end());
      rows.insert(rows.end(), {k, std::log(gamma)});
    }
  return Vector(rows).view({-1, kKvParams});
}

// The rows of `grid` with the `count` lowest objectives, lowest first (ties by index, so the order is
// reproducible; NaN objectives last).
std::vector<std::vector<double>> BestStarts(const torch::Tensor& grid, const FitData& data,
                                            const torch::Tensor& weights, double delta, int count) {
  torch::NoGradGuard no_grad;
  // In chunks of ~1M residuals: the whole grid against a CSV of 10k rows would be 135M doubles per temporary.
  const int64_t chunk = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(data.rows, 1));
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < grid.size(0); begin += chunk) {
    parts.push_back(
        Objective(grid.slice(0, begin, std::min(begin + chunk, grid.size(0))), data, weights, delta));
  }
  const torch::Tensor objective = torch::cat(parts).contiguous();
  const double* values = objective.data_ptr<double>();
  std::vector<int64_t> order(objective.numel());
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int64_t i) { return std::isnan(values[i]) ? kInf : values[i]; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return key(i) < key(j); });
  order.resize(std::min<size_t>(order.size(), static_cast<size_t>(std::max(count, 0))));
  std::vector<std::vector<double>> starts;
  const torch::Tensor rows = grid.contiguous();
  for (int64_t i : order) {
    const double* row = rows.data_ptr<double>() + i * rows.size(1);
    starts.emplace_back(row, row + rows.size(1));
  }
  return starts;
}

Minimum BestOf(const std::vector<std::vector<double>>& starts, const FitData& data,
               const torch::Tensor& weights, double delta) {
  Minimum best;
  for (const auto& start : starts) {
    Minimum m = RunLbfgs(start, data, weights, delta);
    if (m.objective < best.objective) best = std::move(m);
  }
  return best;
}

// Multiplicities of one resample with replacement: weight_i = how often row i was drawn. `rng() % rows`: the
// bias is below rows / 2^64, and unlike std::uniform_int_distribution the draws are the same in every
// library.
torch::Tensor ResampleWeights(std::mt19937_64& rng, int64_t rows) {
  std::vector<double> counts(rows, 0.0);
  for (int64_t i = 0; i < rows; ++i) counts[rng() % rows] += 1.0;
  return Vector(counts);
}

ChinchillaLaw LawFromTheta(const std::vector<double>& t) {
  return ChinchillaLaw{std::exp(t[2]), std::exp(t[0]), std::exp(t[1]), t[3], t[4]};
}

std::vector<double> ThetaFromLaw(const ChinchillaLaw& law) {
  return {std::log(law.A), std::log(law.B), std::log(law.E), law.alpha, law.beta};
}

KvLaw KvLawFromTheta(const std::vector<double>& t) { return KvLaw{LawFromTheta(t), t[5], std::exp(t[6])}; }

absl::Status CheckInputs(const std::vector<double>& params, const std::vector<double>& tokens,
                         const std::vector<double>& loss, size_t minimum, const char* what) {
  if (params.size() != tokens.size() || params.size() != loss.size()) {
    return absl::InvalidArgumentError("params, tokens and loss differ in length");
  }
  if (params.size() < minimum) {
    return absl::InvalidArgumentError(
        absl::StrCat(params.size(), " usable rows; ", what, " needs at least ", minimum));
  }
  return absl::OkStatus();
}

}  // namespace

double ChinchillaLaw::Loss(double params, double tokens) const {
  return E + A / std::pow(params, alpha) + B / std::pow(tokens, beta);
}

ChinchillaLaw PublishedChinchillaLaw() { return ChinchillaLaw{1.69, 406.4, 410.7, 0.34, 0.28}; }

Allocation ComputeOptimal(const ChinchillaLaw& law, double flops) {
  const double sum = law.alpha + law.beta;
  const double g = std::pow(law.alpha * law.A / (law.beta * law.B), 1.0 / sum);
  Allocation out;
  out.flops = flops;
  out.n_opt = g * std::pow(flops / 6.0, law.beta / sum);
  out.d_opt = std::pow(flops / 6.0, law.alpha / sum) / g;
  out.tokens_per_param = out.d_opt / out.n_opt;
  out.loss = law.Loss(out.n_opt, out.d_opt);
  return out;
}

double KvLaw::Loss(double params, double tokens, double kv) const {
  return base.Loss(params, tokens) + (kv < 1.0 ? K * std::pow(1.0 - kv, gamma) : 0.0);
}

absl::StatusOr<LawFit> FitChinchillaLaw(const std::vector<double>& params, const std::vector<double>& tokens,
                                        const std::vector<double>& loss, const LawFitOptions& options) {
  if (absl::Status s = CheckInputs(params, tokens, loss, 5, "Approach 3 (E, A, B, alpha, beta)"); !s.ok())
    return s;
  const Clock::time_point start = Clock::now();
  const FitData data = MakeFitData(params, tokens, loss, nullptr);
  const torch::Tensor ones = torch::ones({data.rows}, Float64());
  const torch::Tensor grid = ChinchillaGrid();
  const double delta = options.huber_delta;
  LawFit fit;
  fit.grid_starts = static_cast<int>(grid.size(0));
  const auto starts = BestStarts(grid, data, ones, delta, options.lbfgs_starts);
  fit.lbfgs_starts = static_cast<int>(starts.size());
  const Minimum best = BestOf(starts, data, ones, delta);
  if (!std::isfinite(best.objective)) {
    return absl::FailedPreconditionError(
        "Approach 3: L-BFGS ended non-finite from every start; check that loss is in nats per token");
  }
  fit.law = LawFromTheta(best.theta);
  fit.objective = best.objective;
  fit.fit_seconds = SecondsSince(start);

  const Clock::time_point bootstrap_start = Clock::now();
  std::mt19937_64 rng(options.seed);
  for (int b = 0; b < options.bootstrap; ++b) {
    const torch::Tensor weights = ResampleWeights(rng, data.rows);
    auto resample_starts = BestStarts(grid, data, weights, delta, options.bootstrap_starts);
    resample_starts.insert(resample_starts.begin(), best.theta);
    const Minimum m = BestOf(resample_starts, data, weights, delta);
    if (std::isfinite(m.objective)) {
      fit.bootstrap.push_back(LawFromTheta(m.theta));
    } else {
      ++fit.bootstrap_failed;
    }
  }
  fit.bootstrap_seconds = SecondsSince(bootstrap_start);
  return fit;
}

absl::StatusOr<KvFit> FitKvLaw(const std::vector<double>& params, const std::vector<double>& tokens,
                               const std::vector<double>& kv, const std::vector<double>& loss,
                               const ChinchillaLaw& start_law, const LawFitOptions& options) {
  if (absl::Status s = CheckInputs(params, tokens, loss, 7, "the KV fit (7 parameters)"); !s.ok()) return s;
  if (kv.size() != params.size()) return absl::InvalidArgumentError("kv and params differ in length");
  std::vector<double> sparse;
  for (double k : kv) {
    if (k < 0.999 &&
        std::none_of(sparse.begin(), sparse.end(), [&](double s) { return std::abs(s - k) < 1e-9; }))
      sparse.push_back(k);
  }
  if (sparse.size() < 2) {
    return absl::FailedPreconditionError(
        absl::StrCat(sparse.size(), " distinct KV fraction(s) below 0.999; K and gamma need at least 2"));
  }
  const Clock::time_point start = Clock::now();
  const FitData data = MakeFitData(params, tokens, loss, &kv);
  const torch::Tensor ones = torch::ones({data.rows}, Float64());
  const torch::Tensor grid = KvGrid(ThetaFromLaw(start_law));
  const double delta = options.huber_delta;
  const Minimum best = BestOf(BestStarts(grid, data, ones, delta, kKvLbfgsStarts), data, ones, delta);
  if (!std::isfinite(best.objective)) {
    return absl::FailedPreconditionError("KV fit: L-BFGS ended non-finite from every start");
  }
  KvFit fit;
  fit.law = KvLawFromTheta(best.theta);
  fit.objective = best.objective;
  fit.fit_seconds = SecondsSince(start);

  const Clock::time_point bootstrap_start = Clock::now();
  // A stream of its own, so adding or removing the KV fit does not change Approach 3's intervals.
  std::mt19937_64 rng(options.seed ^ 0x9e3779b97f4a7c15ULL);
  for (int b = 0; b < options.bootstrap; ++b) {
    const torch::Tensor weights = ResampleWeights(rng, data.rows);
    auto resample_starts = BestStarts(grid, data, weights, delta, std::min(options.bootstrap_starts, 2));
    resample_starts.insert(resample_starts.begin(), best.theta);
    const Minimum m = BestOf(resample_starts, data, weights, delta);
    if (std::isfinite(m.objective)) {
      fit.bootstrap.push_back(KvLawFromTheta(m.theta));
    } else {
      ++fit.bootstrap_failed;
    }
  }
  fit.bootstrap_seconds = SecondsSince(bootstrap_start);
  return fit;
}

Interval Percentile95(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }),
               values.end());
  if (values.empty()) return {std::nan(""), std::nan("")};
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const double position = q * (values.size() - 1);
    const size_t below = static_cast<size_t>(std::floor(position));
    const size_t above = std::min(below + 1, values.size() - 1);
    return values[below] + (position - below) * (values[above] - values[below]);
  };
  return {at(0.025), at(0.975)};
}

namespace internal {

ObjectiveValue LawObjective(const std::vector<double>& theta, const std::vector<double>& params,
                            const std::vector<double>& tokens, const std::vector<double>& kv,
                            const std::vector<double>& loss, double delta, bool autograd) {
  const FitData data = MakeFitData(params, tokens, loss, kv.empty() ? nullptr : &kv);
  const torch::Tensor weights = torch::ones({data.rows}, Float64());
  torch::Tensor t = Vector(theta).view({1, -1}).clone();
  torch::Tensor value, gradient;
  if (autograd) {
    t.requires_grad_(true);
    value = Objective(t, data, weights, delta).sum();
    value.backward();
    gradient = t.grad();
  } else {
    std::tie(value, gradient) = ObjectiveWithGradient(t, data, weights, delta);
  }
  gradient = gradient.reshape({-1}).contiguous();
  return {value.item<double>(),
          std::vector<double>(gradient.data_ptr<double>(), gradient.data_ptr<double>() + gradient.numel())};
}

}  // namespace internal
}  // namespace nats::scaling
