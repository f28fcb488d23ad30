#include "data/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "data/byte_tokenizer.h"
#include "data/gpt2_tokenizer.h"

namespace nats::data {

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(std::string_view name, const std::string& data_dir) {
  if (name == "gpt2") {
    absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> gpt2 =
        Gpt2Tokenizer::Load(absl::StrCat(data_dir, "/tokenizer/r50k_base.tiktoken"));
    if (!gpt2.ok()) return gpt2.status();
    return std::unique_ptr<Tokenizer>(std::move(*gpt2));
  }
  if (name == "byte") return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  return absl::InvalidArgumentError(absl::StrCat("data.tokenizer: unknown tokenizer \"",
                                                 absl::string_view(name.data(), name.size()),
                                                 "\"; allowed values are \"gpt2\" and \"byte\""));
}

}  // namespace nats::data
