// data/file_glob.cpp
#include "data/file_glob.h"

#include <glob.h>

#include <filesystem>
#include <system_error>

namespace nats::data {

bool IsGlobPattern(std::string_view path) { return path.find_first_of("*?[") != std::string_view::npos; }

std::vector<std::string> GlobRegularFiles(const std::string& pattern) {
  std::vector<std::string> files;
  glob_t matches{};
  if (::glob(pattern.c_str(), 0, nullptr, &matches) == 0) {
    std::error_code ec;
    for (size_t i = 0; i < matches.gl_pathc; ++i) {
      if (std::filesystem::is_regular_file(matches.gl_pathv[i], ec)) files.emplace_back(matches.gl_pathv[i]);
    }
  }
  ::globfree(&matches);
  return files;
}

}  // namespace nats::data
