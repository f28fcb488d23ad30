// launch/prepare_command.cpp: `nats prepare`.
//   with --input: a user's text / JSONL corpus -> sharded train/val token shards (data/prepare_corpus.h);
//   without:      the bundled demo books -> data/books/{train,val}.tok (data/prepare.h).
// Fetching is not done here (that needs the package archive); launch/fetch_corpus.sh fetches the books.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "data/cache_dir.h"
#include "data/prepare.h"
#include "data/prepare_corpus.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats prepare --input PATH_OR_GLOB [--input ...] --out DIR [--format auto|text|jsonl]\n"
    "                    [--text_field text] [--tokenizer gpt2|byte] [--val_fraction 0.01]\n"
    "                    [--shard_tokens 100000000] [--threads N] [--skip_bad_lines] [--overwrite]\n"
    "       nats prepare [--tokenizer gpt2|byte] [--out_dir data/books]      (the bundled demo books)\n"
    "\n"
    "Your corpus (--input):\n"
    "  --input P         a file, a directory (every *.txt/*.text/*.md or *.jsonl/*.ndjson/*.json below it, "
    "also\n"
    "                    .gz) or a glob; repeat for more. Files are read in the order given (directories "
    "sorted)\n"
    "  --format F        text: one document per file; jsonl: one document per line (the --text_field "
    "string);\n"
    "                    auto (default): jsonl for *.jsonl/*.ndjson/*.json(.gz), text otherwise\n"
    "  --text_field K    JSONL field holding the text; a dotted path reaches into objects (meta.body)\n"
    "  --out DIR         writes DIR/train/NNNNNN.tok, DIR/val/NNNNNN.tok and DIR/index.json; train on it "
    "with\n"
    "                    --set data.train_path=DIR/train --set data.val_path=DIR/val\n"
    "  --val_fraction X  whole documents to validation by a hash of their text (default 0.01)\n"
    "  --shard_tokens N  tokens per shard at most (default 100000000)\n"
    "  --threads N       tokenizer threads (default: every core); the output does not depend on it\n"
    "  --skip_bad_lines  skip (and count) JSONL lines that are not JSON or lack the field, instead of "
    "stopping\n"
    "  --overwrite       replace a corpus already prepared in DIR\n"
    "Both forms:\n"
    "  --tokenizer T     gpt2 (default; the vocabulary comes from launch/fetch_tokenizer.sh) or byte\n"
    "  --cache_dir D     downloads: books/raw/ and tokenizer/ (default $NATS_CACHE, else .cache)\n"
    "The demo books (no --input):\n"
    "  --out_dir D       where train.tok and val.tok are written (default data/books)\n";

int UsageError(const std::string& message) {
  std::fprintf(stderr, "nats prepare: %s\n", message.c_str());
  return 2;
}

int PrepareBooks(const ParsedFlags& flags, const std::string& cache_dir) {
  data::PrepareOptions options;
  options.data_dir = cache_dir;
  options.out_dir = flags.Get("out_dir", flags.Get("out", options.out_dir));
  options.tokenizer = flags.Get("tokenizer", options.tokenizer);
  absl::Status status = data::PrepareCorpus(options);
  if (!status.ok()) {
    std::fprintf(stderr, "nats prepare: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

int PrepareInputs(const ParsedFlags& flags, const std::string& cache_dir) {
  data::CorpusPrepareOptions options;
  options.inputs = flags.values.at("input");
  options.out_dir = flags.Get("out", flags.Get("out_dir"));
  if (options.out_dir.empty()) return UsageError("--input needs --out DIR (where the shards go)");
  absl::StatusOr<data::InputFormat> format = data::ParseInputFormat(flags.Get("format", "auto"));
  if (!format.ok()) return UsageError(std::string(format.status().message()));
  options.format = *format;
  options.text_field = flags.Get("text_field", options.text_field);
  if (options.text_field.empty()) return UsageError("--text_field is empty");
  options.tokenizer = flags.Get("tokenizer", options.tokenizer);
  options.tokenizer_dir = cache_dir;
  if (flags.Has("val_fraction") && !absl::SimpleAtod(flags.Get("val_fraction"), &options.val_fraction)) {
    return UsageError("--val_fraction " + flags.Get("val_fraction") + " is not a number");
  }
  if (flags.Has("shard_tokens") &&
      (!absl::SimpleAtoi(flags.Get("shard_tokens"), &options.shard_tokens) || options.shard_tokens < 1)) {
    return UsageError("--shard_tokens " + flags.Get("shard_tokens") + " is not a positive integer");
  }
  if (flags.Has("threads") &&
      (!absl::SimpleAtoi(flags.Get("threads"), &options.threads) || options.threads < 0)) {
    return UsageError("--threads " + flags.Get("threads") + " is not a non-negative integer");
  }
  options.skip_bad_lines = flags.Has("skip_bad_lines");
  options.overwrite = flags.Has("overwrite");
  absl::StatusOr<data::CorpusPrepareSummary> summary = data::PrepareUserCorpus(options);
  if (!summary.ok()) {
    std::fprintf(stderr, "nats prepare: %s\n", std::string(summary.status().message()).c_str());
    return 1;
  }
  std::fputs(data::FormatPrepareSummary(options, *summary).c_str(), stdout);
  return 0;
}

}  // namespace

int RunPrepare(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code = ParseCommandFlags(argc, argv,
                                         {"input", "out", "out_dir", "format", "text_field", "tokenizer",
                                          "val_fraction", "shard_tokens", "threads", "cache_dir", "data_dir"},
                                         {"skip_bad_lines", "overwrite"}, kHelp, &flags)) {
    return *exit_code;
  }
  const std::string tokenizer = flags.Get("tokenizer", "gpt2");
  if (tokenizer != "gpt2" && tokenizer != "byte") {
    return UsageError("--tokenizer " + tokenizer + " is not one of gpt2, byte");
  }
  // --data_dir: the old name of --cache_dir, still accepted.
  const std::string cache_dir = flags.Get("cache_dir", flags.Get("data_dir", data::DefaultCacheDir()));
  return flags.Has("input") ? PrepareInputs(flags, cache_dir) : PrepareBooks(flags, cache_dir);
}

}  // namespace nats::launch
