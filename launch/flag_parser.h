// launch/flag_parser.h
//
// The one flag syntax of every `nats` subcommand: `--name value` and `--name=value` for valued flags,
// `--name` for switches, `-h` as a synonym of `--help`. Every flag must be declared; an unknown flag or a
// missing value is an error naming the flag and listing the known ones. Positional arguments (anything
// not starting with "--") are an error unless the command asks for them.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace nats::launch {

struct ParsedFlags {
  std::map<std::string, std::vector<std::string>> values;  // flag -> values in order (repeatable)
  std::set<std::string> switches;                          // boolean flags that were given
  std::vector<std::string> positional;                     // non-flag arguments in order (when allowed)

  bool Has(const std::string& name) const { return values.count(name) || switches.count(name); }
  // The last value of `name`, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
};

// `valued`: flags that take a value; `boolean`: flags that do not. argv[0] is the subcommand. `-h` counts as
// `--help` when "help" is in `boolean`. With `allow_positional`, arguments that do not start with "--" are
// collected in ParsedFlags::positional instead of being refused.
absl::StatusOr<ParsedFlags> ParseFlags(int argc, char** argv, const std::set<std::string>& valued,
                                       const std::set<std::string>& boolean, bool allow_positional = false);

// The common start of a subcommand: parses (with --help added to `boolean`) into *flags. Returns the exit
// code when the command must stop here: 2 after printing the error and `help` to stderr, 0 after printing
// `help` to stdout for --help / -h; std::nullopt when the command should run.
std::optional<int> ParseCommandFlags(int argc, char** argv, const std::set<std::string>& valued,
                                     std::set<std::string> boolean, const char* help, ParsedFlags* flags,
                                     bool allow_positional = false);

}  // namespace nats::launch
