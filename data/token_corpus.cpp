// data/token_corpus.cpp: shard lists from a path spec, reads across shard boundaries, tokenizer checks.
#include "data/token_corpus.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/file_glob.h"
#include "data/mix64.h"

namespace nats::data {
namespace {

std::string FileName(const std::string& path) { return std::filesystem::path(path).filename().string(); }

std::string Describe(const TokenizerIdentity& t) {
  return t.known() ? absl::StrFormat("%s (vocabulary hash %016x)", t.name, t.vocab_hash)
                   : "an unknown tokenizer";
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandShardSpec(const std::string& spec) {
  std::vector<std::string> files;
  std::error_code ec;
  if (IsGlobPattern(spec)) {
    files = GlobRegularFiles(spec);
  } else if (std::filesystem::is_directory(spec, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(spec, ec)) {
      const std::string path = entry.path().string();
      if (entry.is_regular_file(ec) && absl::EndsWith(path, ".tok")) files.push_back(path);
    }
  } else {
    files.push_back(spec);  // a single shard; TokenShard::Open reports it if missing
  }
  if (files.empty() && std::filesystem::exists(std::filesystem::path(spec) / "index.json", ec)) {
    return absl::NotFoundError(absl::StrCat(spec, " is a prepared corpus, not a split: name ", spec,
                                            "/train or ", spec, "/val (data.train_path / data.val_path)"));
  }
  if (files.empty()) {
    return absl::NotFoundError(absl::StrCat(spec,
                                            ": no token shards (*.tok) match; write them with `nats prepare "
                                            "--input ... --out DIR` and name DIR/train, DIR/val or a glob"));
  }
  // By file name, so 000009.tok precedes 000010.tok whatever order the directory lists them in.
  std::sort(files.begin(), files.end(), [](const std::string& a, const std::string& b) {
    const std::string fa = FileName(a), fb = FileName(b);
    return fa != fb ? fa < fb : a < b;
  });
  return files;
}

absl::StatusOr<TokenCorpus> TokenCorpus::Open(const std::string& spec, TokenShard::OpenOptions options) {
  absl::StatusOr<std::vector<std::string>> files = ExpandShardSpec(spec);
  if (!files.ok()) return files.status();
  std::vector<TokenShard> shards;
  shards.reserve(files->size());
  for (const std::string& file : *files) {
    absl::StatusOr<TokenShard> shard = TokenShard::Open(file, options);
    if (!shard.ok()) return shard.status();
    shards.push_back(*std::move(shard));
  }
  return FromShards(spec, std::move(shards));
}

absl::StatusOr<TokenCorpus> TokenCorpus::FromShards(std::string spec, std::vector<TokenShard> shards) {
  if (shards.empty()) return absl::NotFoundError(absl::StrCat(spec, ": no token shards"));
  TokenCorpus corpus;
  corpus.spec_ = std::move(spec);
  corpus.vocab_size_ = shards[0].vocab_size();
  corpus.tokenizer_ = shards[0].tokenizer();
  for (const TokenShard& shard : shards) {
    if (shard.vocab_size() != corpus.vocab_size_ || shard.tokenizer() != corpus.tokenizer_) {
      return absl::InvalidArgumentError(
          absl::StrCat(corpus.spec_, ": shards from different tokenizers: ", shards[0].path(),
                       " has vocabulary ", corpus.vocab_size_, " from ", Describe(corpus.tokenizer_), ", ",
                       shard.path(), " has vocabulary ", shard.vocab_size(), " from ",
                       Describe(shard.tokenizer()), "; keep one tokenizer's shards per split"));
    }
    corpus.starts_.push_back(corpus.starts_.back() + shard.num_tokens());
  }
  corpus.shards_ = std::move(shards);
  return corpus;
}

uint64_t TokenCorpus::num_documents() const {
  uint64_t n = 0;
  for (const TokenShard& shard : shards_) n += shard.num_documents();
  return n;
}

void TokenCorpus::Read(uint64_t begin, uint64_t count, int32_t* out) const {
  if (begin > num_tokens() || count > num_tokens() - begin) {
    std::fprintf(stderr, "FATAL token_corpus (%s): Read range outside the corpus\n", spec_.c_str());
    std::abort();
  }
  // The shard holding `begin`: the last start <= begin.
  size_t i = std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin() - 1;
  while (count > 0) {
    const uint64_t local = begin - starts_[i];
    const uint64_t n = std::min(count, shards_[i].num_tokens() - local);
    if (n > 0) shards_[i].Read(local, n, out);
    out += n;
    begin += n;
    count -= n;
    ++i;
  }
}

uint64_t TokenCorpus::Fingerprint() const {
  uint64_t h = Mix64(shards_.size());
  for (const TokenShard& shard : shards_) {
    h = Mix64(h ^ Hash64(FileName(shard.path())));
    h = Mix64(h ^ shard.num_tokens());
    h = Mix64(h ^ shard.checksum());
  }
  return h;
}

absl::Status CheckCorpusFitsModel(const TokenCorpus& corpus, const std::string& field,
                                  const TokenizerIdentity& expected, int64_t model_vocab_size) {
  if (corpus.tokenizer().known() && corpus.tokenizer() != expected) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, " = ", corpus.path(), ": these tokens come from ", Describe(corpus.tokenizer()),
                     " but the model reads ", Describe(expected),
                     " (data.tokenizer); prepare the corpus again with `nats prepare "
                     "--tokenizer ",
                     expected.name, "` or set data.tokenizer (and model.vocab_size) to match the shards"));
  }
  if (corpus.vocab_size() > model_vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " = ", corpus.path(), ": token shards have vocabulary ", corpus.vocab_size(),
                     " but model.vocab_size = ", model_vocab_size,
                     "; raise model.vocab_size or prepare the data with the matching "
                     "tokenizer"));
  }
  return absl::OkStatus();
}

}  // namespace nats::data
