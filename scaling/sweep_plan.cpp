#include "scaling/sweep_plan.h"

#include <cmath>
#include <filesystem>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "runtime/config.h"

namespace nats::scaling {
namespace fs = std::filesystem;
namespace {

absl::Status SweepError(const std::string& grid, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(grid, ": ", what));
}

// Keeps names usable as directory names and in shell commands.
std::string Sanitize(std::string name) {
  for (char& c : name) {
    const bool ok =
        std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+' || c == '_';
    if (!ok) c = '-';
  }
  return name;
}

std::string LastPart(const std::string& field) {
  const size_t dot = field.rfind('.');
  return dot == std::string::npos ? field : field.substr(dot + 1);
}

// One value of one axis: its label, the part of the cell name, and the overrides it applies.
struct AxisValue {
  std::string label;
  std::string name_part;
  std::vector<std::string> sets;
};

absl::StatusOr<std::vector<AxisValue>> ExpandAxis(const std::string& grid, const config::SweepAxis& axis,
                                                  std::string* column) {
  const bool by_field = axis.has_field() || axis.values_size() > 0;
  const bool by_points = axis.points_size() > 0;
  if (by_field == by_points) {
    return SweepError(
        grid, absl::StrCat("axis '", axis.name(), axis.field(),
                           "': give either field + values or points, not ", by_field ? "both" : "neither"));
  }
  std::vector<AxisValue> out;
  if (by_field) {
    if (axis.field().empty() || axis.values().empty()) {
      return SweepError(grid,
                        absl::StrCat("axis '", axis.field(), "': needs a field and at least one value"));
    }
    *column = axis.has_name() ? axis.name() : LastPart(axis.field());
    for (const std::string& v : axis.values()) {
      double number = 0;
      const bool numeric = absl::SimpleAtod(v, &number);
      const std::string shown = numeric ? ShortNumber(number) : v;
      out.push_back({v, Sanitize(absl::StrCat(*column, shown)), {absl::StrCat(axis.field(), "=", v)}});
    }
  } else {
    *column = axis.has_name() ? axis.name() : "variant";
    for (const config::SweepPoint& p : axis.points()) {
      if (p.name().empty())
        return SweepError(grid, absl::StrCat("axis '", *column, "': every point needs a name"));
      out.push_back({p.name(), Sanitize(p.name()), {p.set().begin(), p.set().end()}});
    }
  }
  return out;
}

struct Horizon {
  enum Kind { kSteps, kTokens, kFlops } kind;
  double value;
};

std::string HorizonName(const Horizon& h) {
  switch (h.kind) {
    case Horizon::kSteps:
      return absl::StrCat("S", static_cast<int64_t>(h.value));
    case Horizon::kTokens:
      return absl::StrCat("T", ShortNumber(h.value));
    case Horizon::kFlops:
      return absl::StrCat("C", ShortNumber(h.value));
  }
  return "";
}

void AbsolutizeDataPaths(config::DataConfig* data) {
  auto fix = [](const std::string& p) {
    return p.empty() || fs::path(p).is_absolute() ? p : fs::absolute(p).string();
  };
  data->set_train_path(fix(data->train_path()));
  data->set_val_path(fix(data->val_path()));
  if (!data->data_dir().empty()) data->set_data_dir(fix(data->data_dir()));
}

}  // namespace

std::string ShortNumber(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e5) return absl::StrCat(static_cast<int64_t>(value));
  std::string s = absl::StrFormat("%.3g", value);
  // "3e+11" -> "3e11", "1e-05" -> "1e-5"
  s = absl::StrReplaceAll(s, {{"e+0", "e"}, {"e+", "e"}, {"e-0", "e-"}});
  return s;
}

absl::StatusOr<SweepPlan> PlanSweep(const std::string& grid_path, const std::string& out_override) {
  absl::StatusOr<config::Sweep> sweep = LoadSweepFile(grid_path);
  if (!sweep.ok()) return sweep.status();
  SweepPlan plan;
  plan.sweep = *sweep;
  plan.grid_path = grid_path;
  const config::Sweep& s = plan.sweep;

  if (s.base_config().empty())
    return SweepError(grid_path, "base_config is empty; name the config every cell starts from");
  const fs::path base_path = fs::path(grid_path).parent_path() / s.base_config();
  absl::StatusOr<config::Config> base = LoadConfigFile(base_path.string());
  if (!base.ok()) return SweepError(grid_path, absl::StrCat("base_config: ", base.status().message()));
  for (const std::string& assignment : s.set()) {
    if (absl::Status st = ApplyOverride(assignment, &*base); !st.ok()) {
      return SweepError(grid_path, absl::StrCat("set: ", st.message()));
    }
  }
  AbsolutizeDataPaths(base->mutable_data());

  std::string out = out_override.empty() ? s.out_dir() : out_override;
  if (out.empty()) out = (fs::path("runs/sweeps") / fs::path(grid_path).stem()).string();
  plan.out_dir = fs::absolute(out).lexically_normal().string();

  // Horizons: exactly one list.
  std::vector<Horizon> horizons;
  const int lists = (s.steps_size() > 0) + (s.tokens_size() > 0) + (s.flops_size() > 0);
  if (lists != 1) {
    return SweepError(grid_path,
                      absl::StrCat("give exactly one horizon list (steps, tokens or flops); found ", lists));
  }
  for (int64_t v : s.steps()) horizons.push_back({Horizon::kSteps, static_cast<double>(v)});
  for (double v : s.tokens()) horizons.push_back({Horizon::kTokens, v});
  for (double v : s.flops()) horizons.push_back({Horizon::kFlops, v});
  for (const Horizon& h : horizons) {
    if (!(h.value > 0)) return SweepError(grid_path, "horizons (steps, tokens, flops) must be positive");
  }
  if (!(s.nats_planning_density() > 0 && s.nats_planning_density() <= 1)) {
    return SweepError(grid_path, "nats_planning_density must be in (0, 1]");
  }

  // Model sizes: family depths, or the base model alone (depth 0).
  std::vector<int> depths(s.family().depths().begin(), s.family().depths().end());
  if (depths.empty()) depths.push_back(0);
  for (int d : depths) {
    if (d < 0 || (s.has_family() && d == 0)) return SweepError(grid_path, "family.depths must be positive");
    if (d > 0 && (s.family().aspect_ratio() * d) % s.family().head_dim() != 0) {
      return SweepError(grid_path,
                        absl::StrFormat("family: d_model %d (aspect_ratio x depth %d) is not a multiple "
                                        "of head_dim %d",
                                        s.family().aspect_ratio() * d, d, s.family().head_dim()));
    }
  }

  std::vector<std::vector<AxisValue>> axes;
  for (const config::SweepAxis& axis : s.axis()) {
    std::string column;
    absl::StatusOr<std::vector<AxisValue>> values = ExpandAxis(grid_path, axis, &column);
    if (!values.ok()) return values.status();
    plan.label_columns.push_back(column);
    axes.push_back(*std::move(values));
  }
  std::vector<uint64_t> seeds(s.seeds().begin(), s.seeds().end());
  const bool seed_axis = !seeds.empty();
  if (!seed_axis) seeds.push_back(base->train().seed());

  // The product, horizon outermost (the small budgets finish first), then size, axes, seed.
  std::set<std::string> names;
  for (const Horizon& horizon : horizons) {
    for (int depth : depths) {
      std::vector<size_t> pick(axes.size(), 0);
      while (true) {
        for (uint64_t seed : seeds) {
          SweepCell cell;
          config::Config& c = cell.config;
          c = *base;
          std::vector<std::string> name_parts;
          cell.depth = depth;
          if (depth > 0) {
            const config::SweepFamily& f = s.family();
            const int width = f.aspect_ratio() * depth;
            c.mutable_model()->set_n_layer(depth);
            c.mutable_model()->set_d_model(width);
            c.mutable_model()->set_n_head(width / f.head_dim());
            c.mutable_optim()->set_lr(
                base->optim().lr() *
                std::pow(static_cast<double>(f.lr_base_width()) / width, f.lr_width_exponent()));
            name_parts.push_back(absl::StrCat("L", depth));
          }
          for (size_t a = 0; a < axes.size(); ++a) {
            const AxisValue& v = axes[a][pick[a]];
            for (const std::string& assignment : v.sets) {
              if (absl::Status st = ApplyOverride(assignment, &c); !st.ok()) {
                return SweepError(grid_path, absl::StrCat("axis '", plan.label_columns[a], "' value '",
                                                          v.label, "': ", st.message()));
              }
            }
            cell.labels.emplace_back(plan.label_columns[a], v.label);
            name_parts.push_back(v.name_part);
          }
          name_parts.push_back(HorizonName(horizon));
          c.mutable_train()->set_seed(seed);
          if (seed_axis) name_parts.push_back(absl::StrCat("s", seed));
          cell.name = absl::StrJoin(name_parts, "_");
          if (!names.insert(cell.name).second) {
            return SweepError(grid_path, absl::StrCat("two cells are named ", cell.name,
                                                      "; give the axes distinct values or point names"));
          }

          const int64_t tokens_per_step =
              static_cast<int64_t>(c.train().batch_size()) * c.model().context_length();
          cell.params = CountParameters(c);
          cell.flops_per_token = TrainingFlopsPerToken(c, s.nats_planning_density());
          switch (horizon.kind) {
            case Horizon::kSteps:
              cell.steps = static_cast<int64_t>(horizon.value);
              break;
            case Horizon::kTokens:
              cell.steps = std::llround(horizon.value / tokens_per_step);
              break;
            case Horizon::kFlops:
              cell.budget_flops = horizon.value;
              cell.steps = std::llround(horizon.value / (cell.flops_per_token * tokens_per_step));
              break;
          }
          cell.tokens = cell.steps * tokens_per_step;
          cell.flops = cell.flops_per_token * static_cast<double>(cell.tokens);
          if (cell.steps < s.min_steps()) {
            plan.left_out.push_back(
                absl::StrCat(cell.name, ": ", cell.steps, " steps < min_steps ", s.min_steps()));
            continue;
          }
          c.mutable_train()->set_steps(static_cast<int32_t>(cell.steps));
          if (s.max_warmup_fraction() > 0) {
            const int cap = std::max<int>(1, static_cast<int>(s.max_warmup_fraction() * cell.steps));
            c.mutable_optim()->set_warmup_steps(std::min(c.optim().warmup_steps(), cap));
          }
          c.mutable_train()->set_run_dir((fs::path(plan.out_dir) / "cells" / cell.name).string());
          c.mutable_checkpoint()->clear_dir();
          if (absl::Status st = ValidateConfig(c); !st.ok()) {
            return SweepError(grid_path, absl::StrCat("cell ", cell.name, ": ", st.message()));
          }
          cell.index = static_cast<int>(plan.cells.size());
          plan.cells.push_back(std::move(cell));
        }
        // Next combination of axis values (odometer, last axis fastest).
        int a = static_cast<int>(axes.size()) - 1;
        while (a >= 0 && ++pick[a] == axes[a].size()) pick[a--] = 0;
        if (a < 0) break;
      }
    }
  }
  if (plan.cells.empty()) {
    return SweepError(grid_path, absl::StrCat("no cell has at least min_steps ", s.min_steps(),
                                              " steps; raise the horizons or lower min_steps"));
  }
  return plan;
}

}  // namespace nats::scaling
