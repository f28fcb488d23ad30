// `nats tokenize`: the token ids of standard input, one per line or as a JSON array.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "data/tokenizer.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"

namespace nats::launch {

int RunTokenize(int argc, char** argv) {
  constexpr char kHelp[] =
      "usage: nats tokenize [--tokenizer gpt2|byte] [--data_dir DIR] [--json] < text\n"
      "  prints the ids of standard input, one per line (or one JSON array with --json)\n"
      "  --tokenizer T  gpt2 (default; reads DIR/tokenizer/, from launch/fetch_tokenizer.sh) or byte\n"
      "  --data_dir DIR the download cache holding tokenizer/ (default $NATS_CACHE, else .cache)\n"
      "  --json         one JSON array instead of one id per line\n";
  ParsedFlags parsed;
  if (auto exit_code = ParseCommandFlags(argc, argv, {"tokenizer", "data_dir"}, {"json"}, kHelp, &parsed))
    return *exit_code;
  const ParsedFlags* flags = &parsed;
  auto tokenizer = data::MakeTokenizer(flags->Get("tokenizer", "gpt2"), flags->Get("data_dir", ""));
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "tokenize: %s\n", std::string(tokenizer.status().message()).c_str());
    return 2;
  }
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::vector<int32_t> ids = (*tokenizer)->Encode(text);
  const bool json = flags->Has("json");
  std::string out = json ? "[" : "";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (json && i) out += ",";
    out += std::to_string(ids[i]);
    if (!json) out += "\n";
  }
  if (json) out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace nats::launch
