#include "runtime/metrics_log.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nats {

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void JsonLine::Key(std::string_view key) {
  if (!body_.empty()) body_ += ",";
  absl::StrAppend(&body_, "\"", JsonEscape(key), "\":");
}

static std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat("%.9g", v);
}

JsonLine& JsonLine::Add(std::string_view key, double value) {
  Key(key);
  body_ += JsonNumber(value);
  return *this;
}

JsonLine& JsonLine::Add(std::string_view key, int64_t value) {
  Key(key);
  absl::StrAppend(&body_, value);
  return *this;
}

JsonLine& JsonLine::Add(std::string_view key, std::string_view value) {
  Key(key);
  absl::StrAppend(&body_, "\"", JsonEscape(value), "\"");
  return *this;
}

JsonLine& JsonLine::AddArray(std::string_view key, const std::vector<double>& values) {
  Key(key);
  body_ += "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) body_ += ",";
    body_ += JsonNumber(values[i]);
  }
  body_ += "]";
  return *this;
}

JsonLine& JsonLine::AddStringArray(std::string_view key, const std::vector<std::string>& values) {
  Key(key);
  body_ += "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) body_ += ",";
    absl::StrAppend(&body_, "\"", JsonEscape(values[i]), "\"");
  }
  body_ += "]";
  return *this;
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

absl::Status MetricsLog::Open(const std::string& path) {
  if (file_) std::fclose(file_);
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open metrics log for writing; check train.run_dir is writable"));
  }
  return absl::OkStatus();
}

void MetricsLog::Write(const JsonLine& line) {
  if (!file_) return;
  std::string s = line.str();
  s += "\n";
  std::fwrite(s.data(), 1, s.size(), file_);
  std::fflush(file_);
}

}  // namespace nats
