// data/prepare.h
//
// `nats prepare`: the demo books (data/corpus.h) -> <out_dir>/train.tok and <out_dir>/val.tok
// (data/token_shard.h). A document is one whole book, cleaned and tokenized, preceded by the tokenizer's
// end-of-text id (as GPT-2 and llm.c do), so eot separates books and a window that crosses a book boundary
// sees the boundary. Whole books go to one split (PG-19 style). The output is a pure function of the raw
// books and the tokenizer: rerunning gives byte-identical shards.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nats::data {

struct PrepareOptions {
  std::string data_dir;  // holds books/raw/ (launch/fetch_corpus.sh) and tokenizer/; empty: the cache
  std::string out_dir = "data/books";  // receives train.tok and val.tok
  std::string tokenizer = "gpt2";      // "gpt2" | "byte" (data.tokenizer)
  FILE* log = stdout;                  // per-book lines and the summary; nullptr: silent
};

struct PreparedBook {
  std::string name;
  std::string split;
  uint64_t clean_bytes = 0;
  uint64_t tokens = 0;  // including its leading eot
};

struct PrepareSummary {
  std::vector<PreparedBook> books;
  uint64_t train_tokens = 0;
  uint64_t val_tokens = 0;
  double seconds = 0;
};

// NotFound naming the missing raw book and launch/fetch_corpus.sh when the corpus is not fetched; the
// tokenizer's error when it cannot be built; file errors naming the shard.
absl::StatusOr<PrepareSummary> PrepareCorpusWithSummary(const PrepareOptions& options);
absl::Status PrepareCorpus(const PrepareOptions& options);

}  // namespace nats::data
