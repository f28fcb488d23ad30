// Tests of the passkey probe (runtime/passkey.h): the prompt is the template of bench/make_passkey_corpus.py
// character for character, the key sits at the requested depth within one word, the length rule holds for the
// byte tokenizer (exactly) and for GPT-2 (when its vocabulary is in $NATS_CACHE; skipped otherwise), samples
// are a function of the seed, the scorer's exact-match rule on fabricated continuations, an oracle that
// answers the expected continuation scores 100%, and one prefill + greedy decode on a small random model
// under each policy.
#include "runtime/passkey.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace nats {
namespace {

std::unique_ptr<data::Tokenizer> ByteTokenizer() {
  auto t = data::MakeTokenizer("byte", "");
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

// Held-out book text when the worktree has it (data/passkey_src), else generated words of varied length.
std::string Filler() {
  const char* src = std::getenv("NATS_SOURCE_DIR");
  if (src != nullptr) {
    std::ifstream in(std::string(src) + "/data/passkey_src/heldout.txt", std::ios::binary);
    if (in) {
      std::stringstream buffer;
      buffer << in.rdbuf();
      std::string text = buffer.str().substr(0, 200000);
      return CollapseWhitespace(text);
    }
  }
  std::string text;
  for (int i = 0; text.size() < 100000; ++i)
    absl::StrAppend(&text, std::string(1 + (i * 7) % 9, 'a' + i % 26), " ");
  return CollapseWhitespace(text);
}

TEST(Passkey, TemplateIsTheCorpusGenerators) {
  // KEY_SENTENCE, QUESTION of bench/make_passkey_corpus.py.
  EXPECT_EQ(PasskeyKeySentence("12345"), " The pass key is 12345. Remember it. 12345 is the pass key.");
  EXPECT_EQ(kPasskeyQuestion, " What is the pass key? The pass key is");
  // filler[:cut] + KEY_SENTENCE + filler[cut:] + QUESTION with the script's cut (Python: cut = int(0.5 * 19)
  // = 9, filler.rfind(" ", 0, 10) = 7).
  EXPECT_EQ(
      PasskeyPromptText("one two three four", 0.5, "12345"),
      "one two The pass key is 12345. Remember it. 12345 is the pass key. three four What is the pass key? "
      "The pass key is");
  EXPECT_EQ(PasskeyInsertionPoint("one two three four", 0.0), 0u);   // no space at index 0: cut stays 0
  EXPECT_EQ(PasskeyInsertionPoint("one two three four", 1.0), 13u);  // the last space
  EXPECT_EQ(PasskeyInsertionPoint("", 0.7), 0u);
  EXPECT_EQ(CollapseWhitespace("  a\t\tb\n\r\nc  d \f"), "a b c d");
}

TEST(Passkey, ByteTokenizerPromptsHaveExactlyTheLength) {
  auto tok = ByteTokenizer();
  const std::string filler = Filler();
  std::set<std::string> keys;
  for (int64_t length : {98, 128, 257, 1024}) {
    for (double depth : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      for (int64_t i = 0; i < 5; ++i) {
        auto s = MakePasskeySample(*tok, filler, "filler", length, depth, /*seed=*/3, i);
        ASSERT_TRUE(s.ok()) << s.status();
        EXPECT_EQ(static_cast<int64_t>(s->tokens.size()), length) << s->text;
        ASSERT_EQ(s->key.size(), 5u);
        const int key = std::stoi(s->key);
        EXPECT_GE(key, 10000);
        EXPECT_LE(key, 99999);
        keys.insert(s->key);
        // The template around the key, the passage a contiguous piece of the filler.
        const std::string sentence = PasskeyKeySentence(s->key);
        EXPECT_EQ(s->text.substr(s->key_offset, sentence.size()), sentence);
        EXPECT_TRUE(absl::EndsWith(s->text, std::string(kPasskeyQuestion)));
        const std::string passage =
            s->text.substr(0, s->key_offset) +
            s->text.substr(s->key_offset + sentence.size(),
                           s->text.size() - s->key_offset - sentence.size() - kPasskeyQuestion.size());
        EXPECT_EQ(passage, filler.substr(s->filler_offset, s->filler_bytes));
        // At the requested depth within one word: no space between the cut and depth * |passage|.
        const size_t target = static_cast<size_t>(depth * passage.size());
        ASSERT_LE(s->key_offset, target);
        if (s->key_offset < target) {
          EXPECT_EQ(passage.substr(s->key_offset + 1, target - s->key_offset - 1).find(' '),
                    std::string::npos)
              << "depth " << depth << " cut " << s->key_offset << " target " << target;
        }
      }
    }
  }
  EXPECT_GT(keys.size(), 15u);  // the keys vary with the length and the sample
}

TEST(Passkey, CutsOnUtf8CharacterBoundaries) {
  auto tok = ByteTokenizer();
  std::string filler;
  while (filler.size() < 20000) filler += "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac\xe2\x82\xac ";
  for (int64_t i = 0; i < 20; ++i) {
    auto s = MakePasskeySample(*tok, filler, "f", 150, 0.5, 2, i);
    ASSERT_TRUE(s.ok()) << s.status();
    const int64_t n = static_cast<int64_t>(s->tokens.size());
    EXPECT_LE(n, 150);
    EXPECT_GE(n, 150 - 2);  // a 3-byte character that does not fit
    const std::string passage = filler.substr(s->filler_offset, s->filler_bytes);
    ASSERT_FALSE(passage.empty());
    EXPECT_NE(static_cast<unsigned char>(passage.front()) & 0xC0, 0x80) << "starts inside a character";
    EXPECT_TRUE(s->filler_offset + s->filler_bytes == filler.size() ||
                (static_cast<unsigned char>(filler[s->filler_offset + s->filler_bytes]) & 0xC0) != 0x80)
        << "ends inside a character";
  }
  // No spaces at all: the passage still starts and ends on characters.
  std::string no_spaces;
  while (no_spaces.size() < 20000) no_spaces += "\xc3\xa9\xe2\x82\xac";
  for (int64_t i = 0; i < 20; ++i) {
    auto s = MakePasskeySample(*tok, no_spaces, "f", 150, 0.5, 4, i);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NE(static_cast<unsigned char>(no_spaces[s->filler_offset]) & 0xC0, 0x80) << s->filler_offset;
    EXPECT_NE(static_cast<unsigned char>(no_spaces[s->filler_offset + s->filler_bytes]) & 0xC0, 0x80);
  }
  // Invalid UTF-8 (continuation bytes only) still gets cut, and the search ends.
  const std::string invalid(5000, '\x80');
  auto s = MakePasskeySample(*tok, invalid, "f", 150, 0.5, 2, 0);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_LE(static_cast<int64_t>(s->tokens.size()), 150);
  EXPECT_GE(static_cast<int64_t>(s->tokens.size()), 147);
}

TEST(Passkey, DeterministicBySeedAndDepthsShareKeyAndPassage) {
  auto tok = ByteTokenizer();
  const std::string filler = Filler();
  auto a = MakePasskeySample(*tok, filler, "f", 128, 0.25, 11, 2);
  auto b = MakePasskeySample(*tok, filler, "f", 128, 0.25, 11, 2);
  auto other_seed = MakePasskeySample(*tok, filler, "f", 128, 0.25, 12, 2);
  auto other_depth = MakePasskeySample(*tok, filler, "f", 128, 0.75, 11, 2);
  ASSERT_TRUE(a.ok() && b.ok() && other_seed.ok() && other_depth.ok());
  EXPECT_EQ(a->text, b->text);
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_NE(a->text, other_seed->text);
  EXPECT_EQ(a->key, other_depth->key);
  EXPECT_EQ(a->filler_offset, other_depth->filler_offset);
  EXPECT_LT(a->key_offset, other_depth->key_offset);
}

TEST(Passkey, ErrorsNameTheFlagAndSizes) {
  auto tok = ByteTokenizer();
  auto too_short_length = MakePasskeySample(*tok, Filler(), "f", 40, 0.5, 0, 0);
  ASSERT_FALSE(too_short_length.ok());
  EXPECT_EQ(too_short_length.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(too_short_length.status().message(), "--lengths 40"))
      << too_short_length.status();
  auto too_short_filler = MakePasskeySample(*tok, "a short filler text", "tiny.txt", 256, 0.5, 0, 0);
  ASSERT_FALSE(too_short_filler.ok());
  EXPECT_EQ(too_short_filler.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(too_short_filler.status().message(), "tiny.txt: 19 bytes"))
      << too_short_filler.status();
  // A filler only a little longer than the prompt needs still gives the exact length.
  const int64_t overhead = static_cast<int64_t>(PasskeyPromptText("", 0.5, "12345").size());
  const std::string exact = Filler().substr(0, 200);
  auto fits = MakePasskeySample(*tok, exact, "f", overhead + 150, 0.5, 0, 0);
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(static_cast<int64_t>(fits->tokens.size()), overhead + 150);
}

TEST(Passkey, Gpt2PromptsMeetTheLengthRule) {
  const char* cache = std::getenv("NATS_CACHE");
  const std::string dir = cache != nullptr ? cache : "";
  if (dir.empty() || !std::filesystem::exists(dir + "/tokenizer/r50k_base.tiktoken")) {
    GTEST_SKIP() << "no GPT-2 vocabulary in $NATS_CACHE/tokenizer (launch/fetch_tokenizer.sh fetches it)";
  }
  auto tok = data::MakeTokenizer("gpt2", dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string filler = Filler();
  for (int64_t length : {64, 256, 512}) {
    for (double depth : {0.0, 0.5, 1.0}) {
      for (int64_t i = 0; i < 3; ++i) {
        auto s = MakePasskeySample(**tok, filler, "f", length, depth, 5, i);
        ASSERT_TRUE(s.ok()) << s.status();
        const int64_t n = static_cast<int64_t>(s->tokens.size());
        EXPECT_LE(n, length);
        EXPECT_GE(n, length - 2) << s->text;  // a merge may swallow the one more character
        // One more character of the passage would pass the length (the rule's other half).
        const std::string longer = filler.substr(s->filler_offset, s->filler_bytes + 1);
        EXPECT_GT(static_cast<int64_t>((*tok)->Encode(PasskeyPromptText(longer, depth, s->key)).size()),
                  length);
      }
    }
  }
}

TEST(Passkey, ScorerIsExactMatch) {
  EXPECT_TRUE(PasskeyMatches(" 12345.", "12345"));
  EXPECT_TRUE(PasskeyMatches("12345", "12345"));
  EXPECT_TRUE(PasskeyMatches(" 12345", "12345"));
  EXPECT_TRUE(PasskeyMatches(" 12345 is", "12345"));
  EXPECT_FALSE(PasskeyMatches(" 123456", "12345"));
  EXPECT_FALSE(PasskeyMatches(" 1234", "12345"));
  EXPECT_FALSE(PasskeyMatches(" 1234.", "12345"));
  EXPECT_FALSE(PasskeyMatches("x 12345", "12345"));
  EXPECT_FALSE(PasskeyMatches("  12345", "12345"));  // one leading space only
  EXPECT_FALSE(PasskeyMatches(" 54321.", "12345"));
  EXPECT_FALSE(PasskeyMatches("", "12345"));
}

TEST(Passkey, OracleAnsweringTheCorpusAnswerScoresAll) {
  // The script's ANSWER " {key}." cut to what the decode loop reads (kPasskeyAnswerBytes) must always match.
  auto tok = ByteTokenizer();
  const std::string filler = Filler();
  for (int64_t i = 0; i < 50; ++i) {
    auto s = MakePasskeySample(*tok, filler, "f", 128, 0.5, 9, i);
    ASSERT_TRUE(s.ok());
    const std::string answer = absl::StrCat(" ", s->key, ".");
    EXPECT_TRUE(PasskeyMatches(answer.substr(0, kPasskeyAnswerBytes), s->key));
  }
}

// The JSON string escapes json.dumps writes for ASCII text (\" \\ \/ \n \t \uXXXX below 0x80); false
// otherwise.
bool UnescapeJsonString(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\') {
      out->push_back(in[i]);
      continue;
    }
    if (++i >= in.size()) return false;
    switch (in[i]) {
      case '"':
      case '\\':
      case '/':
        out->push_back(in[i]);
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'u': {
        if (i + 4 >= in.size()) return false;
        const int code = std::stoi(std::string(in.substr(i + 1, 4)), nullptr, 16);
        if (code >= 0x80) return false;
        out->push_back(static_cast<char>(code));
        i += 4;
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

TEST(Passkey, RebuildsTheTrainingCorpusSamples) {
  // The generator's own output (data/passkey_src/train.jsonl, bench/make_passkey_corpus.py): every passkey
  // document is PasskeyPromptText of its filler at the key's depth followed by " {key}.", which the scorer
  // accepts (an oracle that answers as the corpus does scores 100%).
  const char* src = std::getenv("NATS_SOURCE_DIR");
  std::ifstream in(std::string(src != nullptr ? src : ".") + "/data/passkey_src/train.jsonl");
  if (!in) GTEST_SKIP() << "no data/passkey_src/train.jsonl (bench/make_passkey_corpus.py writes it)";
  const std::string question(kPasskeyQuestion);
  const std::string prefix = "{\"text\": \"", suffix = "\"}";
  std::string line, doc;
  int checked = 0;
  for (int n = 0; n < 3000 && std::getline(in, line); ++n) {
    ASSERT_TRUE(absl::StartsWith(line, prefix) && absl::EndsWith(line, suffix)) << line;
    if (!UnescapeJsonString(
            std::string_view(line).substr(prefix.size(), line.size() - prefix.size() - suffix.size()),
            &doc)) {
      continue;  // non-ASCII escapes: not a byte-level document
    }
    const size_t q = doc.rfind(question);
    if (q == std::string::npos) continue;  // a plain passage
    const std::string answer = doc.substr(q + question.size());
    ASSERT_EQ(answer.size(), 7u) << doc;  // " {key}."
    const std::string key = answer.substr(1, 5);
    EXPECT_TRUE(PasskeyMatches(answer, key)) << answer;
    const std::string sentence = PasskeyKeySentence(key);
    const size_t p = doc.find(sentence);
    ASSERT_NE(p, std::string::npos) << doc;
    const std::string filler = doc.substr(0, p) + doc.substr(p + sentence.size(), q - p - sentence.size());
    if (filler.empty()) continue;
    const double depth = (static_cast<double>(p) + 0.5) / static_cast<double>(filler.size());
    EXPECT_EQ(PasskeyPromptText(filler, depth, key), doc.substr(0, q + question.size()));
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

Transformer SmallByteModel(bool nats) {
  ModelSpec spec;
  spec.model.set_vocab_size(320);
  spec.model.set_n_layer(2);
  spec.model.set_n_head(4);
  spec.model.set_d_model(32);
  spec.model.set_context_length(64);
  spec.model.set_attention(nats ? config::ModelConfig::NATS : config::ModelConfig::DENSE);
  spec.nats.set_window(8);
  spec.nats_layers = {nats, nats};
  torch::manual_seed(5);
  return Transformer(spec);
}

TEST(Passkey, RunSampleDecodesAndReportsThePrefillCache) {
  auto tok = ByteTokenizer();
  auto s = MakePasskeySample(*tok, Filler(), "f", 128, 0.5, 1, 0);
  ASSERT_TRUE(s.ok());
  for (bool nats : {false, true}) {
    Transformer model = SmallByteModel(nats);
    for (CachePolicy policy :
         {CachePolicy::kNats, CachePolicy::kDense, CachePolicy::kStreaming, CachePolicy::kH2O}) {
      CachePolicyConfig pc;
      pc.policy = policy;
      pc.budget = 20;
      auto out = RunPasskeySample(model, *tok, *s, pc, /*max_new_tokens=*/8);
      ASSERT_TRUE(out.ok()) << out.status();
      // Byte tokens: the loop stops at 7 bytes (or earlier at end-of-text).
      EXPECT_LE(out->continuation.size(), static_cast<size_t>(kPasskeyAnswerBytes));
      EXPECT_EQ(out->prefill_cache.tokens, 128);
      EXPECT_EQ(out->correct, PasskeyMatches(out->continuation, s->key));
      const double per_head = static_cast<double>(out->prefill_cache.retained_entries) /
                              (static_cast<double>(out->prefill_cache.dense_entries) / 128.0);
      if (policy == CachePolicy::kDense || (policy == CachePolicy::kNats && !nats))
        EXPECT_EQ(per_head, 128.0);
      if (policy == CachePolicy::kStreaming || policy == CachePolicy::kH2O) EXPECT_EQ(per_head, 20.0);
      if (policy == CachePolicy::kNats && nats) EXPECT_LE(per_head, 128.0);
    }
  }
  Transformer model = SmallByteModel(false);
  auto bad = RunPasskeySample(model, *tok, *s, CachePolicyConfig{}, 0);
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "--max_new_tokens"));
}

}  // namespace
}  // namespace nats
