// data/file_glob.h
//
// Shell-style patterns for the paths users give (`nats prepare --input`, data.train_path), through glob(3).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace nats::data {

// True when `path` holds a glob metacharacter (* ? or [).
bool IsGlobPattern(std::string_view path);

// The regular files matching `pattern`, in glob(3)'s sorted order; empty when none match.
std::vector<std::string> GlobRegularFiles(const std::string& pattern);

}  // namespace nats::data
