// Passkey prompts, their scorer and one prefill + greedy decode per sample (runtime/passkey.h).
#include "runtime/passkey.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "data/mix64.h"

namespace nats {
namespace {

// Retries of a sample's random passage start before it falls back to the filler's beginning (which the first
// search has shown to be long enough).
constexpr int kStartAttempts = 8;

// absl here is built with its own string_view, which StrCat takes but std::string_view does not convert to.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// The largest UTF-8 character boundary <= n in `text` (n <= text.size()). At most 3 bytes back (the longest
// character has 4), so invalid UTF-8 still gets cut and the searches below always progress.
size_t BoundaryAtOrBelow(std::string_view text, size_t n) {
  for (int back = 0; back < 3 && n > 0 && n < text.size() && IsContinuationByte(text[n]); ++back) --n;
  return n;
}

// The smallest character boundary > n (n < text.size()), at most 4 bytes on.
size_t NextBoundary(std::string_view text, size_t n) {
  ++n;
  for (int on = 0; on < 3 && n < text.size() && IsContinuationByte(text[n]); ++on) ++n;
  return n;
}

// The length rule of the header: the filler cut n (a character boundary) with tokens(n) <= length <
// tokens(next boundary), or -1 when all of `passage` still fits (too short).
int64_t FillerCut(const data::Tokenizer& tokenizer, std::string_view passage, int64_t length, double depth,
                  std::string_view key) {
  auto fits = [&](size_t n) {
    return static_cast<int64_t>(
               tokenizer.Encode(PasskeyPromptText(passage.substr(0, n), depth, key)).size()) <= length;
  };
  // Doubling first: the search never encodes much more text than the prompt needs (filler may be megabytes).
  size_t lo = 0, hi = BoundaryAtOrBelow(passage, std::min<size_t>(passage.size(), 2 * length + 64));
  while (fits(hi)) {
    if (hi == passage.size()) return -1;
    lo = hi;
    hi = BoundaryAtOrBelow(passage, std::min(passage.size(), 2 * hi));
  }
  // Invariant: fits(lo), !fits(hi), both character boundaries.
  while (true) {
    size_t mid = BoundaryAtOrBelow(passage, lo + (hi - lo) / 2);
    if (mid <= lo) mid = NextBoundary(passage, lo);
    if (mid >= hi) return static_cast<int64_t>(lo);
    (fits(mid) ? lo : hi) = mid;
  }
}

// The script's passage(): start after the next space when one comes within 40 bytes.
size_t WordStart(std::string_view filler, size_t start) {
  const size_t space = filler.find(' ', start);
  if (space != std::string_view::npos && space < start + 40) return space + 1;
  return start == 0 ? 0 : NextBoundary(filler, start - 1);  // at least not inside a character
}

}  // namespace

std::string PasskeyKeySentence(std::string_view key) {
  return absl::StrCat(" The pass key is ", Absl(key), ". Remember it. ", Absl(key), " is the pass key.");
}

std::string CollapseWhitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    // Python's \s also matches \x1c-\x1f (collapsed here too) and Unicode spaces such as U+00A0 (left as they
    // are: the generator drops non-ASCII afterwards, a gpt2 filler may keep them).
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || (c >= '\x1c' && c <= '\x1f')) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

size_t PasskeyInsertionPoint(std::string_view filler, double depth) {
  // make_passkey_corpus.py: cut = int(depth * len(filler)); space = filler.rfind(" ", 0, cut + 1);
  // cut = space if space > 0 else cut.
  const size_t cut = std::min(filler.size(), static_cast<size_t>(std::max(0.0, depth) * filler.size()));
  const size_t space = filler.substr(0, cut + 1).rfind(' ');
  return space != std::string_view::npos && space > 0 ? space : cut;
}

std::string PasskeyPromptText(std::string_view filler, double depth, std::string_view key) {
  const size_t cut = PasskeyInsertionPoint(filler, depth);
  return absl::StrCat(Absl(filler.substr(0, cut)), PasskeyKeySentence(key), Absl(filler.substr(cut)),
                      Absl(kPasskeyQuestion));
}

absl::StatusOr<PasskeySample> MakePasskeySample(const data::Tokenizer& tokenizer, std::string_view filler,
                                                std::string_view filler_name, int64_t length, double depth,
                                                uint64_t seed, int64_t index) {
  // Counter-based draws (not a std distribution, whose output the standard leaves to the library): the same
  // sample on every platform.
  const uint64_t h = data::Mix64(data::Mix64(data::Mix64(seed) ^ static_cast<uint64_t>(length)) ^
                                 static_cast<uint64_t>(index));
  PasskeySample s;
  s.key = std::to_string(10000 + data::Mix64(h ^ 1) % 90000);
  s.depth = depth;
  const int64_t overhead = static_cast<int64_t>(tokenizer.Encode(PasskeyPromptText("", depth, s.key)).size());
  if (overhead > length) {
    return absl::InvalidArgumentError(absl::StrCat("--lengths ", length,
                                                   ": the key sentence and the question alone take ",
                                                   overhead, " tokens; ask for at least ", overhead + 1));
  }
  // How much filler the prompt needs, measured at the start; later starts leave that much plus a quarter
  // behind.
  const int64_t cut0 = FillerCut(tokenizer, filler, length, depth, s.key);
  if (cut0 < 0) {
    const int64_t tokens = static_cast<int64_t>(tokenizer.Encode(filler).size());
    return absl::FailedPreconditionError(
        absl::StrCat(Absl(filler_name), ": ", filler.size(), " bytes (", tokens, " ", tokenizer.name(),
                     " tokens) of filler are too short for a prompt of ", length,
                     " tokens (the key sentence and question take ", overhead,
                     "); give a longer --filler or shorter --lengths"));
  }
  const size_t need = static_cast<size_t>(cut0) + static_cast<size_t>(cut0) / 4;
  const size_t range = filler.size() > need ? filler.size() - need : 0;
  int64_t cut = -1;
  for (int attempt = 0; attempt < kStartAttempts && cut < 0; ++attempt) {
    s.filler_offset = WordStart(filler, data::Mix64(h ^ (2 + attempt)) % (range + 1));
    cut = FillerCut(tokenizer, filler.substr(s.filler_offset), length, depth, s.key);
  }
  if (cut < 0) {
    s.filler_offset = 0;
    cut = cut0;
  }
  const std::string_view passage = filler.substr(s.filler_offset, static_cast<size_t>(cut));
  s.filler_bytes = passage.size();
  s.key_offset = PasskeyInsertionPoint(passage, depth);
  s.text = PasskeyPromptText(passage, depth, s.key);
  s.tokens = tokenizer.Encode(s.text);
  return s;
}

bool PasskeyMatches(std::string_view continuation, std::string_view key) {
  if (!continuation.empty() && continuation.front() == ' ') continuation.remove_prefix(1);
  if (continuation.substr(0, key.size()) != key) return false;
  return continuation.size() == key.size() ||
         !absl::ascii_isdigit(static_cast<unsigned char>(continuation[key.size()]));
}

absl::StatusOr<PasskeyOutcome> RunPasskeySample(Transformer& model, const data::Tokenizer& tokenizer,
                                                const PasskeySample& sample, const CachePolicyConfig& policy,
                                                int64_t max_new_tokens) {
  if (sample.tokens.empty()) return absl::InvalidArgumentError("passkey sample has an empty prompt");
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  if (absl::Status s = ValidateCachePolicy(policy); !s.ok()) return s;
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Device device = model->parameters().front().device();
  const auto start = std::chrono::steady_clock::now();

  PasskeyOutcome out;
  auto cache = model->NewCache(policy, /*batch=*/1);
  std::vector<int64_t> prompt(sample.tokens.begin(), sample.tokens.end());
  at::Tensor logits = model->Prefill(torch::tensor(prompt, torch::kLong).view({1, -1}).to(device), *cache);
  out.prefill_cache = cache->Summary();
  std::vector<int32_t> generated;
  for (int64_t n = 0; n < max_new_tokens; ++n) {
    // Greedy over the tokenizer's ids: model.vocab_size is padded (e.g. 320 for 257 bytes) and the padding
    // rows decode to nothing.
    const int64_t id = logits[0].narrow(0, 0, tokenizer.vocab_size()).argmax().item<int64_t>();
    if (id == tokenizer.eot_id()) break;
    generated.push_back(static_cast<int32_t>(id));
    absl::StatusOr<std::string> text = tokenizer.Decode(generated);
    if (!text.ok()) {
      model->train(was_training);
      return text.status();
    }
    out.continuation = *std::move(text);
    if (static_cast<int64_t>(out.continuation.size()) >= kPasskeyAnswerBytes || n + 1 == max_new_tokens)
      break;
    logits = model->Decode(torch::full({1, 1}, id, torch::kLong).to(device), *cache);
  }
  out.correct = PasskeyMatches(out.continuation, sample.key);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  model->train(was_training);
  return out;
}

}  // namespace nats
