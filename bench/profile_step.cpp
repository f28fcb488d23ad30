// Where one training step's time goes: by phase (forward, backward, optimizer, framework overhead) and by
// kernel (every ATen operator, autograd node and fused-kernel region, by self time), for any config.
//
// It builds the trainer of `--config` (with --set overrides; the run directory is a temporary one), runs
// `--warmup` steps' forward + backward untimed, then `--steps` steps each timed as Trainer::ForwardBackward
// (loader batch, forward, loss, backward, gradient all-reduce) followed by clip + AdamW (parallel::AdamW, the
// trainer's own optimizer class, over the same parameters), with runtime/op_profiler.h recording. The
// forward/backward split comes from the records themselves: a record inside an autograd node is backward.
//
// usage: profile_step --config FILE [--set field=value]... [--steps 3] [--warmup 1] [--top 25] [--json FILE]
// Output: a markdown table per view (BENCHMARKS.md keeps them); --json also writes them machine-readable.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "parallel/adamw.h"
#include "runtime/config.h"
#include "runtime/op_profiler.h"
#include "runtime/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int Fail(const std::string& message) {
  std::fprintf(stderr, "profile_step: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, json_path;
  std::vector<std::string> sets;
  int steps = 3, warmup = 1, top = 25;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "profile_step: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") {
      config_path = value();
    } else if (a == "--set") {
      sets.push_back(value());
    } else if (a == "--steps") {
      steps = std::atoi(value().c_str());
    } else if (a == "--warmup") {
      warmup = std::atoi(value().c_str());
    } else if (a == "--top") {
      top = std::atoi(value().c_str());
    } else if (a == "--json") {
      json_path = value();
    } else {
      return Fail("unknown argument " + a +
                  "; usage: profile_step --config FILE [--set field=value]... [--steps N] [--warmup N] "
                  "[--top K] [--json FILE]");
    }
  }
  if (config_path.empty()) return Fail("--config FILE is required (e.g. configs/small_byte.textproto)");
  if (steps < 1) return Fail("--steps must be >= 1");

  auto cfg = nats::LoadConfigFile(config_path);
  if (!cfg.ok()) return Fail(std::string(cfg.status().message()));
  const std::filesystem::path run_dir =
      std::filesystem::temp_directory_path() / ("profile_step." + std::to_string(::getpid()));
  for (const std::string& s : sets) {
    if (auto st = nats::ApplyOverride(s, &*cfg); !st.ok()) return Fail(std::string(st.message()));
  }
  for (const std::string& s :
       {std::string("train.run_dir=") + run_dir.string(), std::string("train.eval_interval=0"),
        std::string("checkpoint.interval_steps=0")}) {
    if (auto st = nats::ApplyOverride(s, &*cfg); !st.ok()) return Fail(std::string(st.message()));
  }
  nats::TrainOptions options;
  options.overwrite = true;
  auto trainer = nats::Trainer::Create(*cfg, options);
  if (!trainer.ok()) return Fail(std::string(trainer.status().message()));

  std::vector<nats::parallel::OptimizerParam> params;
  for (auto& [name, tensor] : (*trainer)->NamedParameters())
    params.push_back({name, tensor, tensor.dim() >= 2});
  nats::parallel::AdamWOptions adam;
  // The trainer's settings (runtime/trainer.cpp BuildOptimizer), so the update costs what a run's does.
  adam.lr = cfg->optim().lr();
  adam.beta1 = cfg->optim().beta1();
  adam.beta2 = cfg->optim().beta2();
  adam.eps = cfg->optim().eps();
  adam.weight_decay = cfg->optim().weight_decay();
  auto optimizer = nats::parallel::AdamW::Create(params, adam);
  if (!optimizer.ok()) return Fail(std::string(optimizer.status().message()));

  for (int i = 0; i < warmup; ++i) {
    if (auto loss = (*trainer)->ForwardBackward(); !loss.ok())
      return Fail(std::string(loss.status().message()));
  }
  nats::OpProfiler profiler;
  double fb_seconds = 0, opt_seconds = 0;
  profiler.Start();
  for (int i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    if (auto loss = (*trainer)->ForwardBackward(); !loss.ok())
      return Fail(std::string(loss.status().message()));
    fb_seconds += Since(t0);
    profiler.SetPhase("optimizer");
    const auto t1 = Clock::now();
    if (auto norm = (*optimizer)->ClipGradNorm(1.0); !norm.ok())
      return Fail(std::string(norm.status().message()));
    if (auto st = (*optimizer)->Step(); !st.ok()) return Fail(std::string(st.message()));
    opt_seconds += Since(t1);
    profiler.SetPhase("forward");
  }
  profiler.Stop();
  std::filesystem::remove_all(run_dir);

  const double step = (fb_seconds + opt_seconds) / steps;
  const double fwd = profiler.TopLevelSeconds("forward") / steps,
               bwd = profiler.TopLevelSeconds("backward") / steps;
  const auto& m = cfg->model();
  const double tokens = static_cast<double>(cfg->train().batch_size()) * m.context_length();
  const bool nats_attention = m.attention() == nats::config::ModelConfig::NATS;
  std::printf(
      "profile_step: %s, %s attention, %d layers, d %d, T %d, batch %d, threads %d, %d timed steps\n\n",
      config_path.c_str(), nats_attention ? "NAtS" : "dense", m.n_layer(), m.d_model(), m.context_length(),
      cfg->train().batch_size(), cfg->train().threads(), steps);
  std::printf("| phase | ms / step | share |\n|---|---|---|\n");
  auto row = [&](const char* name, double s) {
    std::printf("| %s | %.1f | %.1f%% |\n", name, 1e3 * s, 100 * s / step);
  };
  row("forward (operators)", fwd);
  row("backward (operators)", bwd);
  row("optimizer (clip + AdamW, wall)", opt_seconds / steps);
  row("other (loader, framework between operators)", fb_seconds / steps - fwd - bwd);
  row("step", step);
  std::printf("\n%.0f tokens/s (%.0f tokens per step)\n\n", tokens / step, tokens);

  const std::vector<nats::OpTiming> timings = profiler.Timings();
  std::printf(
      "| kernel (self time) | phase | calls / step | ms / step | share of step |\n|---|---|---|---|---|\n");
  nlohmann::json kernels = nlohmann::json::array();
  for (size_t i = 0; i < timings.size(); ++i) {
    const nats::OpTiming& t = timings[i];
    kernels.push_back({{"name", t.name},
                       {"phase", t.phase},
                       {"calls_per_step", static_cast<double>(t.calls) / steps},
                       {"self_ms_per_step", 1e3 * t.self_seconds / steps},
                       {"total_ms_per_step", 1e3 * t.total_seconds / steps}});
    if (static_cast<int>(i) < top) {
      std::printf("| %s | %s | %.1f | %.2f | %.1f%% |\n", t.name.c_str(), t.phase.c_str(),
                  static_cast<double>(t.calls) / steps, 1e3 * t.self_seconds / steps,
                  100 * t.self_seconds / steps / step);
    }
  }
  if (!json_path.empty()) {
    nlohmann::json out = {{"config", config_path},
                          {"sets", sets},
                          {"steps", steps},
                          {"step_ms", 1e3 * step},
                          {"tokens_per_s", tokens / step},
                          {"forward_ms", 1e3 * fwd},
                          {"backward_ms", 1e3 * bwd},
                          {"optimizer_ms", 1e3 * opt_seconds / steps},
                          {"other_ms", 1e3 * (fb_seconds / steps - fwd - bwd)},
                          {"kernels", kernels}};
    std::ofstream(json_path) << out.dump(1) << "\n";
  }
  return 0;
}
