// runtime/config.h
//
// Loading, overriding, validating and printing the run configuration (runtime/config.proto).
// A config is a text-format file plus `--set section.field=value` overrides applied in order.
// Every user error names the file or the field path and says how to fix it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/config.pb.h"

namespace nats {

// Parses a text-format Config file. Unknown fields and syntax errors name the file and line.
absl::StatusOr<config::Config> LoadConfigFile(const std::string& path);

// Parses a text-format Sweep file (`nats sweep --grid`, scaling/sweep_plan.h), errors as LoadConfigFile's.
absl::StatusOr<config::Sweep> LoadSweepFile(const std::string& path);

// Applies one override "section.field=value" (e.g. "optim.lr=3e-4", "nats.layers=[0,2]",
// "model.norm=RMS_NORM"). Strings may be given without quotes.
absl::Status ApplyOverride(std::string_view assignment, config::Config* config);

// Checks every value for range and consistency (e.g. n_head % n_kv_head, batch divisibility is
// checked later against the world size). Errors name the field path and the reason.
absl::Status ValidateConfig(const config::Config& config);

// The effective config as text format (every field, defaults included), for logs and run dirs.
std::string ConfigToText(const config::Config& config);

// A stable 64-bit hash of the serialized config, compared across ranks at start-up.
uint64_t ConfigHash(const config::Config& config);
// ConfigHash as 16 hex digits, the form run files record it in (summary.json, results.csv).
std::string ConfigHashText(const config::Config& config);

// One field whose value differs: "optim.lr", "0.0006", "0.0003" (text-format values; strings quoted).
struct ConfigChange {
  std::string field;
  std::string saved;
  std::string current;
};

// Every scalar or repeated field of every section whose value differs (defaults count as values, so an
// unset field equals one set to its default), in field order. Compared through protobuf reflection, so a
// new config field is covered without a list to update.
std::vector<ConfigChange> DiffConfigs(const config::Config& saved, const config::Config& current);

// True when layer `layer` uses NAtS attention under this config.
bool LayerUsesNats(const config::Config& config, int layer);

}  // namespace nats
