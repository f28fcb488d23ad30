// runtime/passkey.h
//
// Synthetic passkey retrieval (`nats eval --task passkey`): a long-context probe that separates KV-cache
// policies by what they keep. A prompt hides a 5-digit key in filler text at a fraction `depth` of it and
// asks for it at the end; the model's greedy continuation is scored by exact match.
//
// The template is the one bench/make_passkey_corpus.py trains on (keep the two equal):
//   filler[:cut] + " The pass key is K. Remember it. K is the pass key." + filler[cut:]
//     + " What is the pass key? The pass key is"           expected continuation: " K"
// where cut = int(depth * |filler|) moved back to the last space at or before it (the script's rule), and the
// filler's whitespace runs are collapsed to single spaces.
//
// Length rule: a prompt of `length` tokens takes a passage of the filler starting at a seeded random offset
// (moved to the next word start within 40 bytes, as the script does) and cuts it at the character count n for
// which the whole prompt has <= length tokens and one character more would have > length. For the byte
// tokenizer on ASCII filler that is exactly `length` tokens; for BPE it is `length` or a token or two fewer
// (a merge can swallow a character). Cuts fall on UTF-8 character boundaries.
//
// Depth is a fraction of the filler's bytes. The key and the passage depend on (seed, length, sample index)
// only, so the depths of one sample share them and differ only in where the key sits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokenizer.h"
#include "nats/kv_cache.h"
#include "nats/transformer.h"

namespace nats {

// " The pass key is {key}. Remember it. {key} is the pass key." with the key filled in.
std::string PasskeyKeySentence(std::string_view key);
inline constexpr std::string_view kPasskeyQuestion = " What is the pass key? The pass key is";
// Bytes of continuation the scorer needs: a space, 5 digits and the character after them.
inline constexpr int64_t kPasskeyAnswerBytes = 7;

// Python's re.sub(r"\s+", " ", text).strip() for ASCII whitespace (the script's filler normalisation).
std::string CollapseWhitespace(std::string_view text);

// Byte offset in `filler` where the key sentence goes for `depth` in [0, 1] (the script's rule above).
size_t PasskeyInsertionPoint(std::string_view filler, double depth);

// filler[:cut] + key sentence + filler[cut:] + question, cut = PasskeyInsertionPoint(filler, depth).
std::string PasskeyPromptText(std::string_view filler, double depth, std::string_view key);

struct PasskeySample {
  std::string key;  // 5 digits, 10000..99999
  double depth = 0;
  std::string text;             // the prompt
  std::vector<int32_t> tokens;  // its ids
  size_t filler_offset = 0;     // where the passage starts in the filler
  size_t filler_bytes = 0;      // bytes of the passage used
  size_t key_offset = 0;        // byte offset of the key sentence in `text`
};

// The sample `index` of `length` tokens at `depth` (see the file comment). `filler` is collapsed text, e.g.
// from CollapseWhitespace; `filler_name` names it in errors. InvalidArgument naming --lengths when `length`
// cannot hold the key sentence and the question; FailedPrecondition naming the filler and sizes when it is
// too short.
absl::StatusOr<PasskeySample> MakePasskeySample(const data::Tokenizer& tokenizer, std::string_view filler,
                                                std::string_view filler_name, int64_t length, double depth,
                                                uint64_t seed, int64_t index);

// Exact match: `continuation` minus one leading space starts with the 5 digits of `key`, and the next
// character, if any, is not a digit (" 12345." and "12345" match; " 123456", " 1234" and "x 12345" do not).
bool PasskeyMatches(std::string_view continuation, std::string_view key);

struct PasskeyOutcome {
  bool correct = false;
  std::string continuation;    // decoded text after the prompt
  CacheSummary prefill_cache;  // the cache at the end of the prefill (what the answer is read from)
  double seconds = 0;          // prefill and decode
};

// Prefill(sample.tokens) under `policy`, then greedy decode until the continuation has kPasskeyAnswerBytes
// bytes, the end-of-text id, or max_new_tokens tokens; scored by PasskeyMatches. Batch 1, no gradients.
absl::StatusOr<PasskeyOutcome> RunPasskeySample(Transformer& model, const data::Tokenizer& tokenizer,
                                                const PasskeySample& sample, const CachePolicyConfig& policy,
                                                int64_t max_new_tokens);

}  // namespace nats
