#include "scaling/fit_report.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace nats::scaling {
namespace {

constexpr char kApproach3Form[] = "L = E + A / N^alpha + B / D^beta";
constexpr char kKvForm[] = "L = E + A / N^alpha + B / D^beta + K (1 - kv)^gamma";

// nlohmann::json writes NaN and infinities as null; keeping them as numbers until dump() gives that for free,
// and this helper makes the intent explicit where a value may be missing.
nlohmann::json Number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json Pair(const Interval& i) { return nlohmann::json::array({Number(i.lo), Number(i.hi)}); }

template <typename Law, typename Field>
Interval IntervalOf(const std::vector<Law>& samples, Field field) {
  std::vector<double> values;
  for (const Law& law : samples) values.push_back(field(law));
  return Percentile95(values);
}

struct Named {
  const char* name;
  double value;
  Interval ci;
};

std::vector<Named> LawValues(const LawFit& fit) {
  const auto& s = fit.bootstrap;
  return {{"E", fit.law.E, IntervalOf(s, [](const ChinchillaLaw& l) { return l.E; })},
          {"A", fit.law.A, IntervalOf(s, [](const ChinchillaLaw& l) { return l.A; })},
          {"B", fit.law.B, IntervalOf(s, [](const ChinchillaLaw& l) { return l.B; })},
          {"alpha", fit.law.alpha, IntervalOf(s, [](const ChinchillaLaw& l) { return l.alpha; })},
          {"beta", fit.law.beta, IntervalOf(s, [](const ChinchillaLaw& l) { return l.beta; })}};
}

std::vector<Named> KvValues(const KvFit& fit) {
  const auto& s = fit.bootstrap;
  return {{"E", fit.law.base.E, IntervalOf(s, [](const KvLaw& l) { return l.base.E; })},
          {"A", fit.law.base.A, IntervalOf(s, [](const KvLaw& l) { return l.base.A; })},
          {"B", fit.law.base.B, IntervalOf(s, [](const KvLaw& l) { return l.base.B; })},
          {"alpha", fit.law.base.alpha, IntervalOf(s, [](const KvLaw& l) { return l.base.alpha; })},
          {"beta", fit.law.base.beta, IntervalOf(s, [](const KvLaw& l) { return l.base.beta; })},
          {"K", fit.law.K, IntervalOf(s, [](const KvLaw& l) { return l.K; })},
          {"gamma", fit.law.gamma, IntervalOf(s, [](const KvLaw& l) { return l.gamma; })}};
}

Interval TokensPerParamInterval(const LawFit& fit, double flops) {
  return IntervalOf(fit.bootstrap,
                    [&](const ChinchillaLaw& l) { return ComputeOptimal(l, flops).tokens_per_param; });
}

nlohmann::json AllocationJson(const Allocation& a) {
  return {{"flops", Number(a.flops)},
          {"n_opt", Number(a.n_opt)},
          {"d_opt", Number(a.d_opt)},
          {"tokens_per_param", Number(a.tokens_per_param)},
          {"loss", Number(a.loss)}};
}

nlohmann::json OptionalNumber(const std::optional<double>& v) {
  return v ? Number(*v) : nlohmann::json(nullptr);
}

std::string G(double v, int digits = 4) {
  return std::isfinite(v) ? absl::StrFormat("%.*g", digits, v) : "-";
}

std::string Ci(const Interval& i, int digits = 4) {
  if (!std::isfinite(i.lo) || !std::isfinite(i.hi)) return "-";
  return absl::StrCat("[", G(i.lo, digits), ", ", G(i.hi, digits), "]");
}

}  // namespace

std::vector<double> FrontierKvGrid() {
  std::vector<double> grid;
  for (int i = 1; i <= 20; ++i) grid.push_back(i / 20.0);  // not 0.05 * i: 0.15000000000000002
  return grid;
}

nlohmann::json FitJson(const FitResults& r) {
  const Observations& obs = r.observations;
  nlohmann::json json;
  json["input"] = obs.path;
  json["columns"] = {{"params", r.columns.params},
                     {"tokens", r.columns.tokens},
                     {"loss", r.columns.loss},
                     {"kv", obs.has_kv ? nlohmann::json(r.columns.kv) : nlohmann::json(nullptr)},
                     {"budget", obs.has_budget ? nlohmann::json(r.columns.budget) : nlohmann::json(nullptr)}};
  json["rows_read"] = obs.rows_read;
  json["rows_used"] = obs.rows.size();
  json["law_rows"] = {{"filter", r.law_rows}, {"rows", r.law_row_count}};
  json["rows_skipped"] = nlohmann::json::array();
  for (const SkippedRow& s : obs.skipped)
    json["rows_skipped"].push_back({{"line", s.line}, {"reason", s.reason}});

  const LawFit& fit = r.approach3;
  nlohmann::json a3 = {{"form", kApproach3Form}};
  nlohmann::json ci = nlohmann::json::object();
  for (const Named& v : LawValues(fit)) {
    a3[v.name] = Number(v.value);
    ci[v.name] = Pair(v.ci);
  }
  a3["ci95"] = ci;
  a3["huber_delta"] = r.options.huber_delta;
  a3["objective"] = Number(fit.objective);
  a3["starts"] = fit.grid_starts;
  a3["lbfgs_starts"] = fit.lbfgs_starts;
  a3["bootstrap"] = r.options.bootstrap;
  a3["seconds"] = fit.fit_seconds + fit.bootstrap_seconds;
  const double sum = fit.law.alpha + fit.law.beta;
  a3["n_exponent"] = Number(fit.law.beta / sum);
  a3["d_exponent"] = Number(fit.law.alpha / sum);
  a3["allocation"] = nlohmann::json::array();
  for (double flops : r.budgets) {
    nlohmann::json a = AllocationJson(ComputeOptimal(fit.law, flops));
    a["tokens_per_param_ci95"] = Pair(TokensPerParamInterval(fit, flops));
    a3["allocation"].push_back(a);
  }
  json["approach3"] = a3;

  if (r.approach2) {
    nlohmann::json a2 = {{"budgets", nlohmann::json::array()}};
    for (const BudgetMinimum& b : r.approach2->budgets) {
      a2["budgets"].push_back({{"flops", Number(b.flops)},
                               {"points", b.points},
                               {"parabola", b.parabola ? nlohmann::json::array({Number((*b.parabola)[0]),
                                                                                Number((*b.parabola)[1]),
                                                                                Number((*b.parabola)[2])})
                                                       : nlohmann::json(nullptr)},
                               {"n_opt", OptionalNumber(b.n_opt)},
                               {"d_opt", OptionalNumber(b.d_opt)},
                               {"loss_min", OptionalNumber(b.loss_min)},
                               {"used", b.used},
                               {"note", b.note}});
    }
    auto law = [](const std::optional<PowerLaw>& p) {
      return p ? nlohmann::json{{"coefficient", Number(p->coefficient)}, {"exponent", Number(p->exponent)}}
               : nlohmann::json(nullptr);
    };
    a2["n_opt_law"] = law(r.approach2->n_opt_law);
    a2["d_opt_law"] = law(r.approach2->d_opt_law);
    json["approach2"] = a2;
  } else {
    json["approach2"] = nullptr;
  }

  if (r.kv) {
    nlohmann::json kv = {{"form", kKvForm}};
    nlohmann::json kv_ci = nlohmann::json::object();
    for (const Named& v : KvValues(*r.kv)) {
      kv[v.name] = Number(v.value);
      kv_ci[v.name] = Pair(v.ci);
    }
    kv["ci95"] = kv_ci;
    kv["objective"] = Number(r.kv->objective);
    kv["frontier"] = nlohmann::json::array();
    for (double flops : r.budgets) {
      const Allocation a = ComputeOptimal(r.kv->law.base, flops);
      nlohmann::json kvs = nlohmann::json::array(), losses = nlohmann::json::array();
      for (double k : FrontierKvGrid()) {
        kvs.push_back(k);
        losses.push_back(Number(r.kv->law.Loss(a.n_opt, a.d_opt, k)));
      }
      kv["frontier"].push_back({{"flops", flops}, {"kv", kvs}, {"loss", losses}});
    }
    json["kv"] = kv;
  } else {
    json["kv"] = nullptr;
  }

  const ChinchillaLaw chinchilla = PublishedChinchillaLaw();
  nlohmann::json c = {{"E", chinchilla.E},       {"A", chinchilla.A},
                      {"B", chinchilla.B},       {"alpha", chinchilla.alpha},
                      {"beta", chinchilla.beta}, {"allocation", nlohmann::json::array()}};
  for (double flops : r.budgets) c["allocation"].push_back(AllocationJson(ComputeOptimal(chinchilla, flops)));
  json["chinchilla"] = c;
  return json;
}

std::string FitReportText(const FitResults& r) {
  const Observations& obs = r.observations;
  std::string out = absl::StrFormat("%s: %d rows read, %d used, %d skipped", obs.path, obs.rows_read,
                                    obs.rows.size(), obs.skipped.size());
  if (!obs.skipped.empty()) {
    std::vector<std::string> shown;
    for (size_t i = 0; i < obs.skipped.size() && i < 5; ++i)
      shown.push_back(absl::StrCat("line ", obs.skipped[i].line, ": ", obs.skipped[i].reason));
    absl::StrAppend(&out, " (", absl::StrJoin(shown, "; "), obs.skipped.size() > 5 ? "; ..." : "", ")");
  }
  absl::StrAppendFormat(&out,
                        "\nApproaches 3 and 2 fit the rows %s (%d); the KV fit takes every used row\n\n",
                        r.law_rows == "all" ? "all" : absl::StrCat("where ", r.law_rows), r.law_row_count);

  const LawFit& fit = r.approach3;
  absl::StrAppend(&out, "Approach 3 (Hoffmann et al. 2022; Besiroglu et al. 2024): ", kApproach3Form, "\n");
  absl::StrAppendFormat(
      &out,
      "  Huber delta %g on log L, L-BFGS (strong Wolfe) from the best %d of %d grid starts; "
      "objective %.4g\n",
      r.options.huber_delta, fit.lbfgs_starts, fit.grid_starts, fit.objective);
  absl::StrAppendFormat(
      &out, "  %-7s %11s  %s\n", "", "fit",
      absl::StrCat("95% interval (", fit.bootstrap.size(), " bootstrap resamples",
                   fit.bootstrap_failed ? absl::StrCat(", ", fit.bootstrap_failed, " failed") : "", ")"));
  for (const Named& v : LawValues(fit))
    absl::StrAppendFormat(&out, "  %-7s %11s  %s\n", v.name, G(v.value), Ci(v.ci));
  const double sum = fit.law.alpha + fit.law.beta;
  absl::StrAppendFormat(&out, "  N_opt ~ C^%.3f, D_opt ~ C^%.3f\n\n", fit.law.beta / sum,
                        fit.law.alpha / sum);

  const ChinchillaLaw chinchilla = PublishedChinchillaLaw();
  absl::StrAppend(
      &out,
      "Compute-optimal allocation (C = 6 N D), this fit | Chinchilla's published fit (E 1.69, A 406.4, "
      "B 410.7, alpha 0.34, beta 0.28)\n");
  absl::StrAppendFormat(&out, "  %-9s %9s %9s %8s %-20s %7s | %9s %9s %8s %7s\n", "C", "N_opt", "D_opt",
                        "D/N", "D/N 95%", "loss", "N_opt", "D_opt", "D/N", "loss");
  for (double flops : r.budgets) {
    const Allocation a = ComputeOptimal(fit.law, flops), c = ComputeOptimal(chinchilla, flops);
    absl::StrAppendFormat(&out, "  %-9s %9s %9s %8s %-20s %7s | %9s %9s %8s %7s\n", G(flops, 3),
                          G(a.n_opt, 3), G(a.d_opt, 3), G(a.tokens_per_param, 4),
                          Ci(TokensPerParamInterval(fit, flops), 4), G(a.loss, 4), G(c.n_opt, 3),
                          G(c.d_opt, 3), G(c.tokens_per_param, 4), G(c.loss, 4));
  }
  absl::StrAppend(&out, "\n");

  if (!r.approach2) {
    absl::StrAppend(&out, "Approach 2 (IsoFLOP): skipped: ", r.approach2_skipped, "\n\n");
  } else {
    const IsoFlopFit& iso = *r.approach2;
    absl::StrAppend(&out, "Approach 2 (IsoFLOP profiles, grouped ", iso.grouping,
                    "; parabola in log10 N, D_opt = C / (6 N_opt))\n");
    absl::StrAppendFormat(&out, "  %-9s %6s %9s %9s %8s  %s\n", "C", "points", "N_opt", "D_opt", "loss_min",
                          "note");
    auto opt = [](const std::optional<double>& v) { return v ? G(*v, 3) : std::string("-"); };
    for (const BudgetMinimum& b : iso.budgets) {
      std::string line =
          absl::StrFormat("  %-9s %6d %9s %9s %8s  %s", G(b.flops, 3), b.points, opt(b.n_opt), opt(b.d_opt),
                          b.loss_min ? G(*b.loss_min, 4) : "-", b.used ? "" : "left out: " + b.note);
      while (!line.empty() && line.back() == ' ') line.pop_back();
      absl::StrAppend(&out, line, "\n");
    }
    if (iso.n_opt_law && iso.d_opt_law) {
      absl::StrAppendFormat(&out, "  N_opt = %.4g C^%.3f, D_opt = %.4g C^%.3f\n", iso.n_opt_law->coefficient,
                            iso.n_opt_law->exponent, iso.d_opt_law->coefficient, iso.d_opt_law->exponent);
    } else {
      absl::StrAppend(&out, "  no power law: ", iso.law_note, "\n");
    }
    if (iso.rows_without_budget > 0)
      absl::StrAppend(&out, "  ", iso.rows_without_budget,
                      " row(s) without a budget or flops value left out\n");
    absl::StrAppend(&out, "\n");
  }

  if (!r.kv) {
    absl::StrAppend(&out, "KV-fraction fit: skipped: ", r.kv_skipped, "\n\n");
  } else {
    const KvFit& kv = *r.kv;
    absl::StrAppend(&out, "KV-fraction fit (NAtS; kv = kept KV-cache fraction, dense = 1): ", kKvForm, "\n");
    absl::StrAppendFormat(
        &out, "  %d rows%s; objective %.4g\n", r.kv_rows,
        obs.kv_missing ? absl::StrCat(" (", obs.kv_missing, " without a kv value left out)") : "",
        kv.objective);
    absl::StrAppendFormat(&out, "  %-7s %11s  %s\n", "", "fit",
                          absl::StrCat("95% interval (", kv.bootstrap.size(), " bootstrap resamples)"));
    for (const Named& v : KvValues(kv))
      absl::StrAppendFormat(&out, "  %-7s %11s  %s\n", v.name, G(v.value), Ci(v.ci));
    const std::vector<double> shown = {0.05, 0.1, 0.25, 0.5, 0.75, 1.0};
    absl::StrAppend(&out, "  loss at the compute-optimal N, D of this fit, by kv:\n");
    absl::StrAppendFormat(&out, "  %-9s", "C");
    for (double k : shown) absl::StrAppendFormat(&out, " %7s", absl::StrCat("kv ", k));
    absl::StrAppend(&out, "\n");
    for (double flops : r.budgets) {
      const Allocation a = ComputeOptimal(kv.law.base, flops);
      absl::StrAppendFormat(&out, "  %-9s", G(flops, 3));
      for (double k : shown) absl::StrAppendFormat(&out, " %7s", G(kv.law.Loss(a.n_opt, a.d_opt, k), 4));
      absl::StrAppend(&out, "\n");
    }
    absl::StrAppend(&out, "\n");
  }

  absl::StrAppendFormat(&out,
                        "Timings: Approach 3 %.2f s (grid + %d L-BFGS runs), bootstrap %.2f s (%d resamples)",
                        fit.fit_seconds, fit.lbfgs_starts, fit.bootstrap_seconds, r.options.bootstrap);
  if (r.kv) {
    absl::StrAppendFormat(&out, ", KV fit %.2f s + bootstrap %.2f s", r.kv->fit_seconds,
                          r.kv->bootstrap_seconds);
  }
  absl::StrAppendFormat(&out, "; total %.2f s\n", r.total_seconds);
  return out;
}

absl::Status WriteFitJson(const std::string& path, const nlohmann::json& json) {
  std::ofstream out(path, std::ios::trunc);
  if (!out)
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write (", std::strerror(errno), ")"));
  // replace: a status or note cell in another encoding than UTF-8 must not make dump() throw.
  out << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed (", std::strerror(errno), ")"));
  return absl::OkStatus();
}

}  // namespace nats::scaling
