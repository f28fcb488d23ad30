// runtime/metrics_log.h
//
// Machine-readable run logs: one JSON object per line, plus the human progress line. Every rank writes
// its own file (rank 0 <run_dir>/metrics.jsonl, rank r metrics.rank<r>.jsonl: runtime/run_directory.h);
// each line carries "rank" so the files can be concatenated. Files are only ever appended to.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace nats {

// Builds one flat JSON object. Keys are emitted in insertion order; non-finite numbers become null.
class JsonLine {
 public:
  JsonLine& Add(std::string_view key, double value);
  JsonLine& Add(std::string_view key, int64_t value);
  JsonLine& Add(std::string_view key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonLine& Add(std::string_view key, std::string_view value);
  JsonLine& Add(std::string_view key, const char* value) { return Add(key, std::string_view(value)); }
  JsonLine& AddArray(std::string_view key, const std::vector<double>& values);
  JsonLine& AddStringArray(std::string_view key, const std::vector<std::string>& values);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void Key(std::string_view key);
  std::string body_;
};

std::string JsonEscape(std::string_view s);

// Appends JSON lines to a file, flushing each line so a killed run keeps everything logged so far.
class MetricsLog {
 public:
  MetricsLog() = default;
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Opens `path` for appending (creating it): a resumed or restarted run continues the same file, and
  // nothing a killed run logged is lost.
  absl::Status Open(const std::string& path);
  void Write(const JsonLine& line);
  bool is_open() const { return file_ != nullptr; }

 private:
  std::FILE* file_ = nullptr;
};

}  // namespace nats
