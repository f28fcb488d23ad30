// launch/prepare_command.cpp: `nats prepare` -- raw demo books -> train/val token shards (data/prepare.h).
// Fetching is not done here (that needs the package archive); launch/fetch_corpus.sh runs first.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "data/prepare.h"
#include "launch/commands.h"

namespace nats::launch {
namespace {

constexpr char kPrepareUsage[] =
    "usage: nats prepare [--data_dir=data] [--out_dir=data/books] [--tokenizer=gpt2|byte]\n"
    "  --data_dir   directory holding books/raw/ (from launch/fetch_corpus.sh) and tokenizer/\n"
    "  --out_dir    where train.tok and val.tok are written\n"
    "  --tokenizer  gpt2 (needs launch/fetch_tokenizer.sh) or byte\n";

}  // namespace

int RunPrepare(int argc, char** argv) {
  data::PrepareOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kPrepareUsage, stdout);
      return 0;
    }
    size_t eq = arg.find('=');
    std::string_view key = arg.substr(0, eq);
    if (eq == std::string_view::npos || key.substr(0, 2) != "--") {
      std::fprintf(stderr, "nats prepare: '%s' is not of the form --flag=value; allowed flags: --data_dir, --out_dir, "
                   "--tokenizer\n", argv[i]);
      return 2;
    }
    std::string value(arg.substr(eq + 1));
    if (key == "--data_dir") {
      options.data_dir = value;
    } else if (key == "--out_dir") {
      options.out_dir = value;
    } else if (key == "--tokenizer") {
      options.tokenizer = value;
    } else {
      std::fprintf(stderr, "nats prepare: unknown flag '%.*s'; allowed flags: --data_dir, --out_dir, --tokenizer\n",
                   static_cast<int>(key.size()), key.data());
      return 2;
    }
  }
  if (options.tokenizer != "gpt2" && options.tokenizer != "byte") {
    std::fprintf(stderr, "nats prepare: --tokenizer=%s is not one of gpt2, byte\n", options.tokenizer.c_str());
    return 2;
  }
  absl::Status status = data::PrepareCorpus(options);
  if (!status.ok()) {
    std::fprintf(stderr, "nats prepare: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace nats::launch
