// data/document_source.cpp: input expansion, streaming text/JSONL reader over zlib, JSON field extraction.
#include "data/document_source.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "data/file_glob.h"

namespace nats::data {
namespace {

namespace fs = std::filesystem;

constexpr size_t kReadBytes = size_t{1} << 20;

bool HasExtension(const std::string& path, std::initializer_list<const char*> extensions) {
  std::string name = path;
  if (absl::EndsWith(name, ".gz")) name.resize(name.size() - 3);
  for (const char* ext : extensions) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return false;
}

bool IsJsonlName(const std::string& path) { return HasExtension(path, {".jsonl", ".ndjson", ".json"}); }
bool IsTextName(const std::string& path) { return HasExtension(path, {".txt", ".text", ".md"}); }

bool Wanted(const std::string& path, InputFormat format) {
  switch (format) {
    case InputFormat::kText:
      return IsTextName(path);
    case InputFormat::kJsonl:
      return IsJsonlName(path);
    case InputFormat::kAuto:
      return IsTextName(path) || IsJsonlName(path);
  }
  return false;
}

InputFormat Resolve(const std::string& path, InputFormat format) {
  if (format != InputFormat::kAuto) return format;
  return IsJsonlName(path) ? InputFormat::kJsonl : InputFormat::kText;
}

}  // namespace

absl::StatusOr<InputFormat> ParseInputFormat(const std::string& name) {
  if (name == "auto") return InputFormat::kAuto;
  if (name == "text") return InputFormat::kText;
  if (name == "jsonl") return InputFormat::kJsonl;
  return absl::InvalidArgumentError(
      absl::StrCat("--format ", name,
                   " is not one of text, jsonl, auto (auto: jsonl for *.jsonl/*.ndjson/*.json, "
                   "text otherwise)"));
}

absl::StatusOr<std::vector<InputFile>> ExpandInputs(const std::vector<std::string>& inputs,
                                                    InputFormat format) {
  std::vector<InputFile> files;
  std::set<std::string> seen;
  auto add = [&](const std::string& path) {
    std::error_code ec;
    const std::string key = fs::weakly_canonical(path, ec).string();
    if (!seen.insert(ec ? path : key).second) return;
    const uint64_t size = fs::file_size(path, ec);
    files.push_back({path, Resolve(path, format), ec ? 0 : size});
  };
  for (const std::string& input : inputs) {
    std::vector<std::string> found;
    std::error_code ec;
    if (IsGlobPattern(input)) {
      found = GlobRegularFiles(input);
    } else if (fs::is_directory(input, ec)) {
      for (auto it = fs::recursive_directory_iterator(input, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_regular_file(ec) && Wanted(it->path().string(), format))
          found.push_back(it->path().string());
      }
      if (ec)
        return absl::PermissionDeniedError(
            absl::StrCat(input, ": cannot list the directory (", ec.message(), ")"));
    } else if (fs::is_regular_file(input, ec)) {
      found.push_back(input);
    } else {
      return absl::NotFoundError(absl::StrCat("--input ", input, ": no such file or directory"));
    }
    if (found.empty()) {
      return absl::NotFoundError(absl::StrCat("--input ", input, ": matches no input files",
                                              fs::is_directory(input, ec)
                                                  ? " (directories contribute *.txt/*.text/*.md for text and "
                                                    "*.jsonl/*.ndjson/*.json for jsonl, each also .gz)"
                                                  : ""));
    }
    std::sort(found.begin(), found.end());
    for (const std::string& path : found) add(path);
  }
  return files;
}

// zlib's gzFile reads .gz transparently and passes any other file through unchanged.
class DocumentReader::GzFile {
 public:
  static absl::StatusOr<std::unique_ptr<GzFile>> Open(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) {
      return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
    }
    gzbuffer(f, 1 << 20);
    return std::unique_ptr<GzFile>(new GzFile(f, path));
  }
  ~GzFile() { gzclose(file_); }

  // Appends up to `max` bytes to *out; 0 at the end of the file; an error names the file.
  absl::StatusOr<size_t> Read(std::string* out, size_t max) {
    const size_t old = out->size();
    out->resize(old + max);
    const int n = gzread(file_, out->data() + old, static_cast<unsigned>(max));
    if (n < 0) {
      int code = 0;
      const char* message = gzerror(file_, &code);
      out->resize(old);
      return absl::DataLossError(absl::StrCat(path_, ": read failed (", message,
                                              code == Z_DATA_ERROR ? "; the gzip stream is corrupt" : "",
                                              ")"));
    }
    out->resize(old + static_cast<size_t>(n));
    if (n == 0) {
      // The end: clean, or a gzip stream cut short (zlib reports that only as a Z_BUF_ERROR here).
      int code = 0;
      gzerror(file_, &code);
      if (code != Z_OK) {
        return absl::DataLossError(absl::StrCat(path_, ": the gzip stream ends early (truncated file?)"));
      }
    }
    return static_cast<size_t>(n);
  }
  uint64_t offset() const { return static_cast<uint64_t>(std::max<z_off_t>(0, gzoffset(file_))); }

 private:
  GzFile(gzFile f, std::string path) : file_(f), path_(std::move(path)) {}
  gzFile file_;
  std::string path_;
};

DocumentReader::DocumentReader(std::vector<InputFile> files) : files_(std::move(files)) {}
DocumentReader::~DocumentReader() = default;

uint64_t DocumentReader::bytes_read() const {
  return finished_bytes_ + (file_ != nullptr ? std::min(file_->offset(), files_[current_].size_bytes) : 0);
}

absl::Status DocumentReader::Fill() {
  if (pos_ > 0) {  // keep the buffer small: drop what was consumed
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  absl::StatusOr<size_t> n = file_->Read(&buffer_, kReadBytes);
  if (!n.ok()) return n.status();
  if (*n == 0) eof_ = true;
  return absl::OkStatus();
}

absl::StatusOr<bool> DocumentReader::Next(RawDocument* out) {
  while (true) {
    if (file_ != nullptr) {
      absl::StatusOr<bool> got =
          files_[current_].format == InputFormat::kJsonl ? NextLine(out) : NextText(out);
      if (!got.ok() || *got) return got;
      finished_bytes_ += files_[current_].size_bytes;
      file_.reset();
    }
    if (current_ + 1 >= static_cast<int>(files_.size())) return false;
    ++current_;
    absl::StatusOr<std::unique_ptr<GzFile>> opened = GzFile::Open(files_[current_].path);
    if (!opened.ok()) return opened.status();
    file_ = *std::move(opened);
    eof_ = false;
    line_ = 0;
    piece_pending_ = false;
    buffer_.clear();
    pos_ = 0;
  }
}

absl::StatusOr<bool> DocumentReader::NextText(RawDocument* out) {
  // Read until a safe cut after kPieceBytes, kMaxPieceBytes, or the end of the file.
  while (!eof_ && buffer_.size() - pos_ < kMaxPieceBytes) {
    if (buffer_.size() - pos_ > kPieceBytes &&
        LastSafeCut(std::string_view(buffer_).substr(pos_ + kPieceBytes)) > 0) {
      break;
    }
    if (absl::Status s = Fill(); !s.ok()) return s;
  }
  const std::string_view rest = std::string_view(buffer_).substr(pos_);
  size_t take = rest.size();
  if (!eof_ || take > kMaxPieceBytes) {
    const size_t cut =
        take > kPieceBytes ? LastSafeCut(rest.substr(kPieceBytes, kMaxPieceBytes - kPieceBytes)) : 0;
    take = cut > 0 ? kPieceBytes + cut : std::min(take, kMaxPieceBytes);
  }
  if (take == 0 && piece_pending_) return false;  // the end of a document already sent
  // An empty file is still a document (an empty one: counted and skipped by the caller).
  out->bytes.assign(rest.substr(0, take));
  out->file_index = current_;
  out->line = 0;
  out->continues = piece_pending_;
  out->jsonl = false;
  pos_ += take;
  piece_pending_ = true;  // at the end of the file the next call returns false and Next moves on
  return true;
}

absl::StatusOr<bool> DocumentReader::NextLine(RawDocument* out) {
  while (true) {
    const size_t nl = buffer_.find('\n', pos_);
    if (nl == std::string::npos && !eof_) {
      if (buffer_.size() - pos_ > kMaxLineBytes) {
        return absl::InvalidArgumentError(absl::StrCat(files_[current_].path, ":", line_ + 1,
                                                       ": line longer than ", kMaxLineBytes >> 20,
                                                       " MiB; is this really JSON lines?"));
      }
      if (absl::Status s = Fill(); !s.ok()) return s;
      continue;
    }
    const size_t end = nl == std::string::npos ? buffer_.size() : nl;
    if (end == pos_ && nl == std::string::npos) return false;  // end of file
    ++line_;
    std::string_view line = std::string_view(buffer_).substr(pos_, end - pos_);
    pos_ = nl == std::string::npos ? end : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank lines separate nothing
    out->bytes.assign(line);
    out->file_index = current_;
    out->line = line_;
    out->continues = false;
    out->jsonl = true;
    return true;
  }
}

size_t LastSafeCut(std::string_view text) {
  for (size_t p = text.size(); p-- > 1;) {
    const auto c = static_cast<unsigned char>(text[p]);
    if (text[p - 1] == '\n' && c > 0x20 && c < 0x7F) return p;
  }
  return 0;
}

absl::StatusOr<std::string> ExtractJsonText(std::string_view line, const std::string& field_path) {
  nlohmann::json doc = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    // Parse again with exceptions for the parser's message (rare path: only malformed lines).
    try {
      const nlohmann::json unused = nlohmann::json::parse(line.begin(), line.end());
      (void)unused;
    } catch (const nlohmann::json::parse_error& e) {
      std::string what = e.what();
      if (const size_t at = what.find("parse error"); at != std::string::npos) what = what.substr(at);
      return absl::InvalidArgumentError(absl::StrCat("not valid JSON (", what, ")"));
    }
    return absl::InvalidArgumentError("not valid JSON");
  }
  const nlohmann::json* node = &doc;
  std::string walked;
  for (absl::string_view key : absl::StrSplit(field_path, '.')) {
    absl::StrAppend(&walked, walked.empty() ? "" : ".", key);
    if (!node->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", walked, "\" is missing (its parent is not an object)"));
    }
    const auto it = node->find(std::string(key));
    if (it == node->end())
      return absl::InvalidArgumentError(absl::StrCat("field \"", walked, "\" is missing"));
    node = &*it;
  }
  if (!node->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", field_path, "\" is ", node->type_name(), ", not a string"));
  }
  return node->get<std::string>();
}

}  // namespace nats::data
