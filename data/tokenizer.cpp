#include "data/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "data/byte_tokenizer.h"
#include "data/cache_dir.h"
#include "data/gpt2_tokenizer.h"

namespace nats::data {

uint64_t VocabularyHashFromSha256Hex(std::string_view hex_digest) {
  uint64_t hash = 0;
  for (size_t i = 0; i < 16 && i < hex_digest.size(); ++i) {
    const char c = hex_digest[i];
    const uint64_t digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0;
    hash = (hash << 4) | digit;
  }
  return hash;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(std::string_view name, const std::string& data_dir) {
  if (name == "gpt2") {
    const std::string dir = data_dir.empty() ? DefaultCacheDir() : data_dir;
    absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> gpt2 =
        Gpt2Tokenizer::Load(absl::StrCat(dir, "/tokenizer/r50k_base.tiktoken"));
    if (!gpt2.ok()) return gpt2.status();
    return std::unique_ptr<Tokenizer>(std::move(*gpt2));
  }
  if (name == "byte") return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  return absl::InvalidArgumentError(absl::StrCat("data.tokenizer: unknown tokenizer \"",
                                                 absl::string_view(name.data(), name.size()),
                                                 "\"; allowed values are \"gpt2\" and \"byte\""));
}

absl::StatusOr<TokenizerIdentity> TokenizerIdentityOf(std::string_view name) {
  if (name == "gpt2")
    return TokenizerIdentity{"gpt2", VocabularyHashFromSha256Hex(Gpt2Tokenizer::kRanksSha256)};
  if (name == "byte") return ByteTokenizer().identity();
  return MakeTokenizer(name, "").status();
}

}  // namespace nats::data
