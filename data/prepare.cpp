// data/prepare.cpp: clean + tokenize the demo books, write the train/val token shards.
#include "data/prepare.h"

#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "data/cache_dir.h"
#include "data/corpus.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

namespace nats::data {
namespace {

struct BookTokens {
  uint64_t clean_bytes = 0;
  std::vector<int32_t> tokens;
};

absl::StatusOr<BookTokens> TokenizeBook(const Tokenizer& tokenizer, const std::string& data_dir,
                                        const BookSpec& book) {
  absl::StatusOr<std::string> text = LoadCleanBook(data_dir, book);
  if (!text.ok()) return text.status();
  BookTokens out;
  out.clean_bytes = text->size();
  out.tokens.push_back(tokenizer.eot_id());
  std::vector<int32_t> ids = tokenizer.Encode(*text);
  out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
  return out;
}

}  // namespace

absl::StatusOr<PrepareSummary> PrepareCorpusWithSummary(const PrepareOptions& options_in) {
  PrepareOptions options = options_in;
  if (options.data_dir.empty()) options.data_dir = DefaultCacheDir();
  const auto start = std::chrono::steady_clock::now();
  absl::Span<const BookSpec> books = DemoBooks();

  // Fail before any work when the corpus is not fetched, naming every missing file once.
  std::string missing;
  std::set<std::string> checked;  // the six Austen novels share one file
  for (const BookSpec& book : books) {
    const std::string path = RawBookPath(options.data_dir, book);
    std::error_code ec;
    if (checked.insert(path).second && !std::filesystem::is_regular_file(path, ec)) {
      absl::StrAppend(&missing, missing.empty() ? "" : ", ", path);
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "missing raw books: ", missing, "; fetch them with `launch/fetch_corpus.sh ", options.data_dir, "`"));
  }

  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = MakeTokenizer(options.tokenizer, options.data_dir);
  if (!tokenizer.ok()) return tokenizer.status();

  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat(options.out_dir, ": cannot create the output directory (", ec.message(), ")"));
  }

  // Books are independent: tokenize them concurrently (a Tokenizer is immutable, so it is shared), then write
  // them in the fixed book order so the shards do not depend on scheduling.
  std::vector<std::future<absl::StatusOr<BookTokens>>> jobs;
  for (const BookSpec& book : books) {
    jobs.push_back(std::async(std::launch::async, [&tok = **tokenizer, &options, &book] {
      return TokenizeBook(tok, options.data_dir, book);
    }));
  }
  std::vector<BookTokens> tokenized;
  absl::Status first_error;
  for (auto& job : jobs) {
    absl::StatusOr<BookTokens> result = job.get();  // wait for every job before returning, even on error
    if (!result.ok() && first_error.ok()) first_error = result.status();
    tokenized.push_back(result.ok() ? *std::move(result) : BookTokens());
  }
  if (!first_error.ok()) return first_error;

  PrepareSummary summary;
  for (Split split : {Split::kTrain, Split::kVal}) {
    const std::string path = absl::StrCat(options.out_dir, "/", std::string(SplitName(split)), ".tok");
    absl::StatusOr<TokenShardWriter> writer =
        TokenShardWriter::Create(path, (*tokenizer)->vocab_size(), (*tokenizer)->identity());
    if (!writer.ok()) return writer.status();
    for (size_t i = 0; i < books.size(); ++i) {
      if (books[i].split != split) continue;
      absl::Status st = writer->AddDocument(tokenized[i].tokens);
      if (!st.ok()) return st;
      summary.books.push_back({std::string(books[i].name), std::string(SplitName(split)),
                               tokenized[i].clean_bytes, tokenized[i].tokens.size()});
      if (options.log != nullptr) {
        std::fprintf(options.log, "  %-5s %-16s %10llu bytes %10llu tokens\n",
                     std::string(SplitName(split)).c_str(), std::string(books[i].name).c_str(),
                     static_cast<unsigned long long>(tokenized[i].clean_bytes),
                     static_cast<unsigned long long>(tokenized[i].tokens.size()));
      }
    }
    (split == Split::kTrain ? summary.train_tokens : summary.val_tokens) = writer->num_tokens();
    absl::Status st = writer->Finish();
    if (!st.ok()) return st;
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (options.log != nullptr) {
    std::fprintf(options.log,
                 "prepared %zu books with tokenizer %s (vocab %d): train %llu tokens -> %s/train.tok, "
                 "val %llu tokens -> %s/val.tok, %.1f s\n",
                 summary.books.size(), (*tokenizer)->name().c_str(), (*tokenizer)->vocab_size(),
                 static_cast<unsigned long long>(summary.train_tokens), options.out_dir.c_str(),
                 static_cast<unsigned long long>(summary.val_tokens), options.out_dir.c_str(),
                 summary.seconds);
  }
  return summary;
}

absl::Status PrepareCorpus(const PrepareOptions& options) {
  return PrepareCorpusWithSummary(options).status();
}

}  // namespace nats::data
