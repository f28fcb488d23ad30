#include "launch/flag_parser.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nats::launch {

std::string ParsedFlags::Get(const std::string& name, const std::string& fallback) const {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? fallback : it->second.back();
}

absl::StatusOr<ParsedFlags> ParseFlags(int argc, char** argv, const std::set<std::string>& valued,
                                       const std::set<std::string>& boolean, bool allow_positional) {
  ParsedFlags flags;
  auto known = [&] {
    std::vector<std::string> all;
    for (const auto& f : valued) all.push_back("--" + f);
    for (const auto& f : boolean) all.push_back("--" + f);
    return absl::StrJoin(all, " ");
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    // The short spelling everyone tries first; no other single-dash flags exist.
    if (arg == "-h" && boolean.count("help")) arg = "--help";
    if (arg.rfind("--", 0) != 0) {
      if (allow_positional) {
        flags.positional.push_back(arg);
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(argv[0], ": unexpected argument '", arg, "'; known flags: ", known()));
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (boolean.count(name)) {
      if (has_value) {
        return absl::InvalidArgumentError(absl::StrCat(argv[0], ": --", name, " takes no value"));
      }
      flags.switches.insert(name);
      continue;
    }
    if (!valued.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(argv[0], ": unknown flag --", name, "; known flags: ", known()));
    }
    if (!has_value) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat(argv[0], ": --", name, " needs a value"));
      value = argv[++i];
    }
    flags.values[name].push_back(value);
  }
  return flags;
}

std::optional<int> ParseCommandFlags(int argc, char** argv, const std::set<std::string>& valued,
                                     std::set<std::string> boolean, const char* help, ParsedFlags* flags,
                                     bool allow_positional) {
  boolean.insert("help");
  auto parsed = ParseFlags(argc, argv, valued, boolean, allow_positional);
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n%s", std::string(parsed.status().message()).c_str(), help);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(help, stdout);
    return 0;
  }
  *flags = std::move(*parsed);
  return std::nullopt;
}

}  // namespace nats::launch
