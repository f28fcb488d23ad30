// data/prepare_corpus.cpp: the ordered reader -> tokenizer threads -> writer pipeline of `nats prepare
// --input`.
#include "data/prepare_corpus.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/corpus.h"
#include "data/human_units.h"
#include "data/mix64.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

namespace nats::data {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kBatchBytes = size_t{1} << 20;
constexpr size_t kBatchDocuments = 4096;

struct Batch {
  uint64_t seq = 0;
  std::vector<RawDocument> documents;
};

// What a tokenizer thread makes of one RawDocument.
struct Processed {
  enum class Kind { kDocument, kEmpty, kBadLine };
  Kind kind = Kind::kDocument;
  bool continues = false;
  bool val = false;  // first pieces only; later pieces follow their document
  bool invalid_utf8 = false;
  uint64_t text_bytes = 0;
  std::vector<int32_t> tokens;
  std::string error;  // kBadLine: "file:line: why"
};

struct ProcessedBatch {
  std::vector<Processed> documents;
};

// Validation when the first 53 bits of the text's hash, as a fraction of 2^53, fall below val_fraction.
bool GoesToValidation(std::string_view text, double val_fraction) {
  const double u = static_cast<double>(Hash64(text) >> 11) * 0x1.0p-53;
  return u < val_fraction;
}

Processed ProcessDocument(const RawDocument& raw, const Tokenizer& tokenizer,
                          const CorpusPrepareOptions& options, const std::vector<InputFile>& files) {
  Processed out;
  out.continues = raw.continues;
  std::string extracted;
  std::string_view text = raw.bytes;
  if (raw.jsonl) {
    absl::StatusOr<std::string> field = ExtractJsonText(raw.bytes, options.text_field);
    if (!field.ok()) {
      out.kind = Processed::Kind::kBadLine;
      out.error = absl::StrCat(files[raw.file_index].path, ":", raw.line, ": ", field.status().message());
      return out;
    }
    extracted = *std::move(field);
    text = extracted;
  }
  if (text.empty() && !raw.continues) {
    out.kind = Processed::Kind::kEmpty;
    return out;
  }
  out.text_bytes = text.size();
  out.invalid_utf8 = !IsValidUtf8(text);
  if (!raw.continues) {
    out.val = GoesToValidation(text, options.val_fraction);
    out.tokens.push_back(tokenizer.eot_id());
  }
  std::vector<int32_t> ids = tokenizer.Encode(text);
  out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
  return out;
}

// The three stages and the bounded window between them. The writer is the calling thread.
class Pipeline {
 public:
  Pipeline(DocumentReader* reader, const Tokenizer* tokenizer, const CorpusPrepareOptions* options,
           int threads)
      : reader_(reader), tokenizer_(tokenizer), options_(options), max_in_flight_(2 * threads + 2) {
    reader_thread_ = std::thread([this] { ReadAll(); });
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~Pipeline() { Stop(); }

  // The processed batch `seq`, waiting for it; nullopt after the last one, or the reader's error.
  absl::StatusOr<std::unique_ptr<ProcessedBatch>> Take(uint64_t seq) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_.count(seq) || (reader_finished_ && seq >= batches_sent_); });
    if (!done_.count(seq)) {
      if (!reader_status_.ok()) return reader_status_;
      return std::unique_ptr<ProcessedBatch>();
    }
    std::unique_ptr<ProcessedBatch> batch = std::move(done_[seq]);
    done_.erase(seq);
    taken_ = seq + 1;
    cv_.notify_all();
    return batch;
  }

  uint64_t bytes_read() const {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_read_;
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (reader_thread_.joinable()) reader_thread_.join();
    for (std::thread& w : workers_) {
      if (w.joinable()) w.join();
    }
  }

 private:
  void ReadAll() {
    absl::Status status;
    uint64_t seq = 0;
    while (true) {
      Batch batch;
      batch.seq = seq;
      size_t bytes = 0;
      bool end = false;
      while (bytes < kBatchBytes && batch.documents.size() < kBatchDocuments) {
        RawDocument doc;
        absl::StatusOr<bool> got = reader_->Next(&doc);
        if (!got.ok()) status = got.status();
        if (!got.ok() || !*got) {
          end = true;
          break;
        }
        bytes += doc.bytes.size();
        batch.documents.push_back(std::move(doc));
      }
      std::unique_lock<std::mutex> lock(mu_);
      bytes_read_ = reader_->bytes_read();
      if (!batch.documents.empty()) {
        cv_.wait(lock, [&] { return stopping_ || seq - taken_ < max_in_flight_; });
        if (stopping_) break;
        todo_.push_back(std::move(batch));
        batches_sent_ = ++seq;
        cv_.notify_all();
      }
      if (end || stopping_) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    reader_status_ = status;
    reader_finished_ = true;
    cv_.notify_all();
  }

  void Work() {
    const std::vector<InputFile>& files = reader_->files();
    while (true) {
      Batch batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !todo_.empty() || reader_finished_; });
        if (stopping_ || todo_.empty()) return;
        batch = std::move(todo_.front());
        todo_.pop_front();
      }
      auto processed = std::make_unique<ProcessedBatch>();
      processed->documents.reserve(batch.documents.size());
      for (const RawDocument& doc : batch.documents) {
        processed->documents.push_back(ProcessDocument(doc, *tokenizer_, *options_, files));
      }
      std::lock_guard<std::mutex> lock(mu_);
      done_[batch.seq] = std::move(processed);
      cv_.notify_all();
    }
  }

  DocumentReader* reader_;
  const Tokenizer* tokenizer_;
  const CorpusPrepareOptions* options_;
  const uint64_t max_in_flight_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> todo_;
  std::map<uint64_t, std::unique_ptr<ProcessedBatch>> done_;
  uint64_t batches_sent_ = 0;
  uint64_t taken_ = 0;
  uint64_t bytes_read_ = 0;
  bool reader_finished_ = false;
  bool stopping_ = false;
  absl::Status reader_status_;
  std::thread reader_thread_;
  std::vector<std::thread> workers_;
};

std::string HumanCount(double n) {
  if (n >= 1e9) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1e6) return absl::StrFormat("%.1fM", n / 1e6);
  if (n >= 1e4) return absl::StrFormat("%.1fk", n / 1e3);
  return absl::StrFormat("%.0f", n);
}

// The progress line: redrawn in place on a terminal, printed every 10 s to a file or pipe.
class Progress {
 public:
  Progress(FILE* out, uint64_t total_bytes)
      : out_(out),
        tty_(out != nullptr && ::isatty(::fileno(out))),
        total_(total_bytes),
        start_(Clock::now()),
        last_(start_) {}

  void Update(uint64_t bytes, uint64_t tokens, uint64_t documents, bool force = false) {
    if (out_ == nullptr) return;
    const auto now = Clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (!force && since < (tty_ ? 0.5 : 10.0)) return;
    last_ = now;
    const double elapsed = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
    const double rate = bytes / elapsed;
    std::string line = absl::StrFormat("prepare %s / %s", FormatBytes(bytes, 2), FormatBytes(total_, 2));
    if (total_ > 0)
      absl::StrAppendFormat(&line, " %3.0f%%", 100.0 * std::min<uint64_t>(bytes, total_) / total_);
    absl::StrAppendFormat(&line, " | %s/s | %s tokens | %s docs", FormatBytes(rate, 2), HumanCount(tokens),
                          HumanCount(documents));
    if (total_ > bytes && rate > 0)
      absl::StrAppend(&line, " | ETA ", FormatDuration((total_ - bytes) / rate));
    if (tty_) {
      std::fprintf(out_, "\r%-100s", line.c_str());
    } else {
      std::fprintf(out_, "%s\n", line.c_str());
    }
    std::fflush(out_);
  }
  void Done() {
    if (out_ != nullptr && tty_) std::fputc('\n', out_);
  }

 private:
  FILE* out_;
  bool tty_;
  uint64_t total_;
  Clock::time_point start_, last_;
};

// Refuses to mix a new corpus into an old one; with overwrite, removes the old one's shards and index first.
absl::Status PrepareOutputDirectory(const CorpusPrepareOptions& options) {
  std::error_code ec;
  const fs::path out(options.out_dir);
  bool holds_corpus = fs::exists(out / "index.json", ec);
  for (const char* split : {"train", "val"}) {
    for (auto it = fs::directory_iterator(out / split, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (it->path().extension() == ".tok") holds_corpus = true;
    }
    ec.clear();
  }
  if (holds_corpus && !options.overwrite) {
    return absl::AlreadyExistsError(
        absl::StrCat(options.out_dir,
                     " already holds a prepared corpus (index.json or "
                     "train/, val/ shards); pass --overwrite to replace it or choose "
                     "another --out"));
  }
  if (holds_corpus) {
    fs::remove(out / "index.json", ec);
    for (const char* split : {"train", "val"}) {
      std::vector<fs::path> old;
      for (auto it = fs::directory_iterator(out / split, ec); !ec && it != fs::directory_iterator();
           it.increment(ec)) {
        if (it->path().extension() == ".tok") old.push_back(it->path());
      }
      ec.clear();
      for (const fs::path& p : old) fs::remove(p, ec);
    }
  }
  for (const char* split : {"train", "val"}) {
    fs::create_directories(out / split, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat((out / split).string(), ": cannot create the output directory (", ec.message(), ")"));
    }
  }
  return absl::OkStatus();
}

void RemoveWritten(const SplitSummary& split) {
  std::error_code ec;
  for (const WrittenShard& shard : split.shards) fs::remove(shard.path, ec);
}

nlohmann::json SplitJson(const SplitSummary& split, const std::string& out_dir) {
  nlohmann::json shards = nlohmann::json::array();
  for (const WrittenShard& s : split.shards) {
    shards.push_back({{"file", fs::relative(s.path, out_dir).string()},
                      {"tokens", s.tokens},
                      {"documents", s.documents},
                      {"crc32", s.checksum}});
  }
  return {{"documents", split.documents},
          {"tokens", split.tokens},
          {"text_bytes", split.text_bytes},
          {"shards", shards}};
}

absl::Status WriteIndex(const CorpusPrepareOptions& options, const CorpusPrepareSummary& summary,
                        const Tokenizer& tokenizer, const std::vector<InputFile>& files) {
  nlohmann::json inputs = nlohmann::json::array();
  for (const InputFile& f : files) {
    inputs.push_back({{"path", f.path},
                      {"format", f.format == InputFormat::kJsonl ? "jsonl" : "text"},
                      {"bytes", f.size_bytes}});
  }
  nlohmann::json index = {
      {"kind", "nats prepared corpus"},
      {"version", 1},
      {"tokenizer",
       {{"name", tokenizer.name()},
        {"vocab_size", tokenizer.vocab_size()},
        {"vocab_hash", absl::StrFormat("%016x", tokenizer.vocabulary_hash())},
        {"eot_id", tokenizer.eot_id()}}},
      {"text_field", options.text_field},
      {"val_fraction", options.val_fraction},
      {"shard_tokens", options.shard_tokens},
      {"inputs", inputs},
      {"train", SplitJson(summary.train, options.out_dir)},
      {"val", SplitJson(summary.val, options.out_dir)},
      {"skipped", {{"empty_documents", summary.empty_documents}, {"bad_lines", summary.bad_lines}}},
      {"invalid_utf8_documents", summary.invalid_utf8_documents},
      {"threads", summary.threads},
      {"seconds", summary.seconds},
  };
  const std::string path = options.out_dir + "/index.json";
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create"));
  const std::string text = index.dump(2) + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": write failed; free disk space and run again"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CorpusPrepareSummary> PrepareUserCorpus(const CorpusPrepareOptions& options) {
  const auto start = Clock::now();
  if (options.inputs.empty()) return absl::InvalidArgumentError("no --input given");
  if (options.out_dir.empty()) return absl::InvalidArgumentError("--out DIR is required with --input");
  if (!(options.val_fraction >= 0 && options.val_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--val_fraction ", options.val_fraction, " is not in [0, 1)"));
  }
  if (options.shard_tokens < 1) return absl::InvalidArgumentError("--shard_tokens must be at least 1");

  absl::StatusOr<std::vector<InputFile>> files = ExpandInputs(options.inputs, options.format);
  if (!files.ok()) return files.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      MakeTokenizer(options.tokenizer, options.tokenizer_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  if (absl::Status s = PrepareOutputDirectory(options); !s.ok()) return s;

  CorpusPrepareSummary summary;
  summary.files = files->size();
  for (const InputFile& f : *files) summary.input_bytes += f.size_bytes;
  summary.threads = options.threads > 0 ? options.threads
                                        : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  const Tokenizer& tok = **tokenizer;
  ShardSetWriter train(options.out_dir + "/train", tok.vocab_size(), tok.identity(), options.shard_tokens);
  ShardSetWriter val(options.out_dir + "/val", tok.vocab_size(), tok.identity(), options.shard_tokens);
  auto fail = [&](absl::Status status) {
    summary.train.shards = train.shards();
    summary.val.shards = val.shards();
    RemoveWritten(summary.train);
    RemoveWritten(summary.val);
    return status;
  };

  DocumentReader reader(*files);
  Progress progress(options.progress, summary.input_bytes);
  {
    Pipeline pipeline(&reader, &tok, &options, summary.threads);
    bool in_val = false;   // the split of the document the next continued piece belongs to
    bool skipping = true;  // the current document was skipped (empty or bad): drop its later pieces too
    for (uint64_t seq = 0;; ++seq) {
      absl::StatusOr<std::unique_ptr<ProcessedBatch>> batch = pipeline.Take(seq);
      if (!batch.ok()) return fail(batch.status());
      if (*batch == nullptr) break;
      for (Processed& doc : (*batch)->documents) {
        if (doc.kind == Processed::Kind::kBadLine) {
          if (!options.skip_bad_lines) {
            return fail(absl::InvalidArgumentError(absl::StrCat(
                doc.error,
                "; fix the line, name the text field with --text_field, or pass --skip_bad_lines to "
                "skip such lines (they are counted)")));
          }
          if (summary.bad_lines++ == 0) summary.first_bad_line = doc.error;
          continue;
        }
        if (doc.kind == Processed::Kind::kEmpty) {
          ++summary.empty_documents;
          skipping = true;
          continue;
        }
        if (doc.continues && skipping) continue;
        if (!doc.continues) {
          in_val = doc.val;
          skipping = false;
          (in_val ? val : train).StartDocument();
          ++(in_val ? summary.val : summary.train).documents;
          if (doc.invalid_utf8) ++summary.invalid_utf8_documents;
        }
        SplitSummary& split = in_val ? summary.val : summary.train;
        split.text_bytes += doc.text_bytes;
        split.tokens += doc.tokens.size();
        if (absl::Status s = (in_val ? val : train).Append(doc.tokens); !s.ok()) return fail(s);
      }
      progress.Update(pipeline.bytes_read(), summary.train.tokens + summary.val.tokens,
                      summary.train.documents + summary.val.documents);
    }
  }
  for (ShardSetWriter* w : {&train, &val}) {
    if (absl::Status s = w->Finish(); !s.ok()) return fail(s);
  }
  summary.train.shards = train.shards();
  summary.val.shards = val.shards();
  progress.Update(summary.input_bytes, summary.train.tokens + summary.val.tokens,
                  summary.train.documents + summary.val.documents, /*force=*/true);
  progress.Done();
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (absl::Status s = WriteIndex(options, summary, tok, *files); !s.ok()) return fail(s);
  return summary;
}

std::string FormatPrepareSummary(const CorpusPrepareOptions& options, const CorpusPrepareSummary& s) {
  auto split_line = [](const char* name, const SplitSummary& split, const std::string& dir) {
    const double tokens_no_eot = static_cast<double>(split.tokens - split.documents);
    return absl::StrFormat(
        "  %-5s %10s documents %12s tokens %10s of text  %.2f bytes/token  %zu shard%s in %s\n", name,
        HumanCount(split.documents), HumanCount(split.tokens), FormatBytes(split.text_bytes, 2),
        tokens_no_eot > 0 ? split.text_bytes / tokens_no_eot : 0.0, split.shards.size(),
        split.shards.size() == 1 ? "" : "s", dir);
  };
  const double text_bytes = static_cast<double>(s.train.text_bytes + s.val.text_bytes);
  std::string out = absl::StrFormat(
      "prepared %zu file%s (%s on disk, %s of text) with tokenizer %s in %.1f s: %s/s of text on %d "
      "thread%s\n",
      s.files, s.files == 1 ? "" : "s", FormatBytes(s.input_bytes, 2), FormatBytes(text_bytes, 2),
      options.tokenizer, s.seconds, FormatBytes(text_bytes / std::max(1e-9, s.seconds), 2), s.threads,
      s.threads == 1 ? "" : "s");
  out += split_line("train", s.train, options.out_dir + "/train");
  out += split_line("val", s.val, options.out_dir + "/val");
  if (s.empty_documents > 0) absl::StrAppend(&out, "  skipped ", s.empty_documents, " empty documents\n");
  if (s.bad_lines > 0) {
    absl::StrAppend(&out, "  skipped ", s.bad_lines,
                    " bad lines (--skip_bad_lines); the first: ", s.first_bad_line, "\n");
  }
  if (s.invalid_utf8_documents > 0) {
    absl::StrAppend(&out, "  ", s.invalid_utf8_documents,
                    " documents are not valid UTF-8: their bytes were kept as they are\n");
  }
  if (s.val.documents == 0) {
    absl::StrAppend(&out, "  warning: no document went to validation; raise --val_fraction (now ",
                    options.val_fraction, ")\n");
  }
  absl::StrAppend(&out, "  index: ", options.out_dir, "/index.json\n",
                  "train on it with: --set data.train_path=", options.out_dir,
                  "/train --set data.val_path=", options.out_dir,
                  "/val --set data.tokenizer=", options.tokenizer, "\n");
  return out;
}

}  // namespace nats::data
