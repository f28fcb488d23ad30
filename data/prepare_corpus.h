// data/prepare_corpus.h
//
// `nats prepare --input ...`: a user's corpus (text files or JSON lines, plain or gzip;
// data/document_source.h)
// -> <out>/train/NNNNNN.tok, <out>/val/NNNNNN.tok (data/shard_set_writer.h) and <out>/index.json.
//
// What a document becomes: the tokenizer's end-of-text id, then the ids of its text (as GPT-2 and llm.c do),
// so eot separates documents and a training window that crosses a boundary sees it. Which split: a whole
// document goes to validation when Hash64 of its first piece of text (data/mix64.h; the whole text for
// documents under 1 MiB) falls in the lowest `val_fraction` of the 64-bit range. The split depends on the
// text alone: not on file order, thread count or machine, and duplicates land together. Order: documents are
// written in input order whatever the thread count, so the shards are a pure function of the inputs and
// options (byte-identical across --threads). Memory: one reader thread, `threads` tokenizer threads and the
// writer (the calling thread) pass batches of about 1 MiB of text through a window of 2 x threads + 2
// batches, so memory does not grow with the corpus. Bad input: a JSONL line that is not JSON, lacks the field
// or holds a non-string stops the run with file:line and the fix, unless skip_bad_lines (then it is counted
// and the first is shown). Empty documents are skipped and counted. Text that is not valid UTF-8 is kept byte
// for byte (both tokenizers encode any bytes losslessly) and counted. On any error the shards written so far
// are removed; the inputs are never touched.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/document_source.h"
#include "data/shard_set_writer.h"

namespace nats::data {

struct CorpusPrepareOptions {
  std::vector<std::string> inputs;  // files, directories, globs (ExpandInputs)
  InputFormat format = InputFormat::kAuto;
  std::string text_field = "text";  // JSONL: dotted path of the document's text
  std::string tokenizer = "gpt2";   // "gpt2" | "byte"
  std::string tokenizer_dir;        // the cache directory holding tokenizer/ (data.data_dir)
  std::string out_dir;
  double val_fraction = 0.01;
  uint64_t shard_tokens = 100'000'000;
  int threads = 0;  // tokenizer threads; 0 = every core
  bool skip_bad_lines = false;
  bool overwrite = false;   // replace a corpus already prepared in out_dir
  FILE* progress = stderr;  // progress bar (redrawn in place on a terminal, a line every 10 s otherwise)
};

struct SplitSummary {
  uint64_t documents = 0;
  uint64_t tokens = 0;      // eot included
  uint64_t text_bytes = 0;  // of the documents' text
  std::vector<WrittenShard> shards;
};

struct CorpusPrepareSummary {
  size_t files = 0;
  uint64_t input_bytes = 0;  // on disk
  SplitSummary train, val;
  uint64_t empty_documents = 0;
  uint64_t bad_lines = 0;
  std::string first_bad_line;  // "file:line: why", when bad_lines > 0
  uint64_t invalid_utf8_documents = 0;
  int threads = 0;
  double seconds = 0;
};

// Errors name the input file (and line) or the output path, and say what to do.
absl::StatusOr<CorpusPrepareSummary> PrepareUserCorpus(const CorpusPrepareOptions& options);

// The one-paragraph summary printed at the end (documents, tokens, bytes per token, shards, skipped input,
// and the
// --set flags that train on the result).
std::string FormatPrepareSummary(const CorpusPrepareOptions& options, const CorpusPrepareSummary& summary);

}  // namespace nats::data
