// data/corpus.cpp: the demo book list and the cleaning of raw Project Gutenberg-style text.
#include "data/corpus.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "data/utf8.h"

namespace nats::data {
namespace {

// PG-19 style split: whole books. Validation = Tom Sawyer (fiction by the author of Huck Finn, so
// in-distribution but unseen) + Opticks (expository 18th-century prose), so validation loss measures both
// registers. All six Austen novels train: one author's style split across the two sides would blur what
// validation measures.
constexpr BookSpec kDemoBooks[] = {
    {"mobydick", "Moby Dick", Split::kTrain, {}},
    {"poe", "The Works of Edgar Allan Poe, vols. 1-5", Split::kTrain, {}},
    {"huckfinn", "Adventures of Huckleberry Finn", Split::kTrain, {}},
    {"sherlock", "The Adventures of Sherlock Holmes", Split::kTrain, {}},
    // Why KJV loses its `Ge1:1 ` prefixes: the reference costs ~5 GPT-2 tokens on each of its 31k lines
    // (12.4% of the book's tokens, measured) and is fully predictable from the line before; it would teach
    // bookkeeping rather than language and flatter the loss. Verse-per-line layout is kept, a blank line
    // marks a new book.
    {"kjv", "The Bible, King James Version", Split::kTrain, {/*strip_verse_references=*/true}},
    {"emma", "Emma", Split::kTrain, {}, "EMMA"},
    {"mansfieldpark", "Mansfield Park", Split::kTrain, {}, "MANSFIELD PARK"},
    {"northangerabbey", "Northanger Abbey", Split::kTrain, {}, "NORTHANGER ABBEY"},
    {"persuasion", "Persuasion", Split::kTrain, {}, "PERSUASION"},
    {"prideprejudice", "Pride and Prejudice", Split::kTrain, {}, "PRIDE AND PREJUDICE"},
    {"sensesensibility", "Sense and Sensibility", Split::kTrain, {}, "SENSE AND SENSIBILITY"},
    {"tomsawyer", "The Adventures of Tom Sawyer", Split::kVal, {}},
    {"opticks", "Opticks (Newton)", Split::kVal, {}},
};

// CP1252 0x80-0x9F; 0 marks the five undefined bytes (they map to U+0080+n like Latin-1).
constexpr char16_t kCp1252High[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

// Debian's Abseil has its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW=0), which std::string_view
// does not convert to; these few ASCII helpers work on std::string_view directly.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsAlpha(char c) { return IsUpper(c) || (c >= 'a' && c <= 'z'); }
char Lower(char c) { return IsUpper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view StripLeadingSpace(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}

bool ConsumePrefix(std::string_view* s, std::string_view prefix) {
  if (s->substr(0, prefix.size()) != prefix) return false;
  s->remove_prefix(prefix.size());
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

bool ContainsIgnoreCase(std::string_view s, std::string_view needle) {
  for (size_t i = 0; i + needle.size() <= s.size(); ++i) {
    if (EqualsIgnoreCase(s.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    // Only BMP code points come from CP1252.
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Splits into lines that keep their '\n' (the last one may lack it).
std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t nl = text.find('\n', begin);
    size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    lines.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  return lines;
}

bool IsBlank(std::string_view line) { return StripLeadingSpace(line).empty(); }

// `*** START OF ...` / `***START OF ...` (modern PG markers). `***START**THE SMALL PRINT` is not one.
bool IsModernMarker(std::string_view line, std::string_view word) {
  std::string_view s = StripLeadingSpace(line);
  if (!ConsumePrefix(&s, "***")) return false;
  s = StripLeadingSpace(s);
  return StartsWithIgnoreCase(s, word) &&
         StartsWithIgnoreCase(StripLeadingSpace(s.substr(word.size())), "OF ");
}

bool IsOldHeaderStart(std::string_view line) {
  return StartsWithIgnoreCase(StripLeadingSpace(line), "The Project Gutenberg Etext of");
}

bool IsOldHeaderEnd(std::string_view line) {
  std::string_view s = StripLeadingSpace(line);
  return s.substr(0, 4) == "*END" && ContainsIgnoreCase(s, "SMALL PRINT");
}

bool IsOldFooter(std::string_view line) {
  std::string_view s = StripLeadingSpace(line);
  return StartsWithIgnoreCase(s, "End of the Project Gutenberg") ||
         StartsWithIgnoreCase(s, "End of Project Gutenberg");
}

// Old headers are 280-360 lines long in the Poe volumes; a bound keeps a stray "The Project Gutenberg Etext
// of" line in the middle of a book from swallowing text up to some distant small-print marker.
constexpr size_t kMaxOldHeaderLines = 600;

// Parses a KJV verse reference `[1-3]?[A-Z][A-Za-z]*[0-9]+:[0-9]+ `; returns its length (0 if none) and the
// book.
size_t VerseReferenceLength(std::string_view line, std::string_view* book) {
  size_t i = 0;
  auto is_digit = [&](size_t k) { return k < line.size() && IsDigit(line[k]); };
  if (i < line.size() && line[i] >= '1' && line[i] <= '3') ++i;
  if (!(i < line.size() && IsUpper(line[i]))) return 0;
  ++i;
  while (i < line.size() && IsAlpha(line[i])) ++i;
  size_t book_end = i;
  if (!is_digit(i)) return 0;
  while (is_digit(i)) ++i;
  if (!(i < line.size() && line[i] == ':')) return 0;
  ++i;
  if (!is_digit(i)) return 0;
  while (is_digit(i)) ++i;
  if (!(i < line.size() && line[i] == ' ')) return 0;
  *book = line.substr(0, book_end);
  return i + 1;
}

}  // namespace

std::string_view SplitName(Split split) { return split == Split::kTrain ? "train" : "val"; }

absl::Span<const BookSpec> DemoBooks() { return kDemoBooks; }

std::string RawBookPath(const std::string& data_dir, const BookSpec& book) {
  if (!book.austen_record.empty()) return absl::StrCat(data_dir, "/books/raw/austen.rdb");
  return absl::StrCat(data_dir, "/books/raw/", std::string(book.name), ".txt");
}

absl::StatusOr<std::vector<std::vector<std::string>>> DecodeRCharacterVectors(std::string_view bytes,
                                                                              const std::string& path) {
  auto corrupt = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(path, ": not an R database of character vectors (", what,
                                            "); re-fetch it with `launch/fetch_corpus.sh`"));
  };
  auto be32 = [](std::string_view s, size_t at) {
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) v = (v << 8) | static_cast<unsigned char>(s[at + k]);
    return v;
  };
  std::vector<std::vector<std::string>> records;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 4) return corrupt("truncated record header");
    const uint32_t size = be32(bytes, pos);
    // zlib cannot expand more than ~1032x; a larger claim is corruption, not a reason to allocate gigabytes.
    if (size / 1032 > bytes.size() - pos)
      return corrupt(absl::StrCat("implausible record size at byte ", pos));
    std::string record(size, '\0');
    uLongf out_len = size;
    uLong in_len = bytes.size() - pos - 4;
    int rc = uncompress2(reinterpret_cast<Bytef*>(record.data()), &out_len,
                         reinterpret_cast<const Bytef*>(bytes.data() + pos + 4), &in_len);
    if (rc != Z_OK || out_len != size) return corrupt(absl::StrCat("bad zlib stream at byte ", pos));
    pos += 4 + in_len;

    // XDR serialisation: "X\n", format version, R version, minimal R version, [native encoding], then the
    // SEXP.
    size_t p = 0;
    auto read_int = [&](int32_t* v) {
      if (record.size() - p < 4) return false;
      *v = static_cast<int32_t>(be32(record, p));
      p += 4;
      return true;
    };
    int32_t version = 0, unused = 0, flags = 0, length = 0;
    if (record.compare(0, 2, "X\n") != 0) return corrupt("not XDR serialisation");
    p = 2;
    if (!read_int(&version) || !read_int(&unused) || !read_int(&unused)) return corrupt("short header");
    if (version == 3) {
      int32_t enc_len = 0;
      if (!read_int(&enc_len) || enc_len < 0 || record.size() - p < static_cast<size_t>(enc_len)) {
        return corrupt("bad native encoding");
      }
      p += enc_len;
    } else if (version != 2) {
      return corrupt(absl::StrCat("serialisation format ", version));
    }
    constexpr int32_t kStrSxp = 16, kCharSxp = 9, kLatin1Mask = 1 << 2;
    if (!read_int(&flags) || (flags & 0xFF) != kStrSxp) return corrupt("record is not a character vector");
    // Every element takes at least 8 bytes (flags, length): a longer claim is corruption, and reserving it
    // would ask for up to 64 GiB (found by tests/fuzz/corpus_fuzz).
    if (!read_int(&length) || length < 0 || static_cast<size_t>(length) > (record.size() - p) / 8) {
      return corrupt("bad vector length");
    }
    std::vector<std::string> lines;
    lines.reserve(length);
    for (int32_t i = 0; i < length; ++i) {
      int32_t len = 0;
      if (!read_int(&flags) || (flags & 0xFF) != kCharSxp || !read_int(&len)) return corrupt("bad string");
      if (len == -1) {  // NA_character_
        lines.emplace_back();
        continue;
      }
      if (len < 0 || record.size() - p < static_cast<size_t>(len)) return corrupt("string past the record");
      std::string_view line(record.data() + p, len);
      p += len;
      // R's string encoding lives in the general-purpose bits, above the 12 low flag bits.
      lines.push_back((flags >> 12) & kLatin1Mask ? Cp1252ToUtf8(line) : std::string(line));
    }
    records.push_back(std::move(lines));
  }
  return records;
}

std::string Cp1252ToUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + bytes.size() / 16);
  for (char ch : bytes) {
    auto b = static_cast<unsigned char>(ch);
    uint32_t cp = b;
    if (b >= 0x80 && b < 0xA0 && kCp1252High[b - 0x80] != 0) cp = kCp1252High[b - 0x80];
    AppendUtf8(cp, &out);
  }
  return out;
}

std::string ToUtf8(std::string_view raw) { return IsValidUtf8(raw) ? std::string(raw) : Cp1252ToUtf8(raw); }

std::string NormalizeNewlines(std::string_view text) {
  ConsumePrefix(&text, "\xEF\xBB\xBF");
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::string StripGutenbergBoilerplate(std::string_view text) {
  std::vector<std::string_view> lines = Lines(text);

  // Modern markers: keep what lies strictly between the first START and the first END after it.
  size_t begin = 0, end = lines.size();
  for (size_t i = 0; i < lines.size(); ++i) {
    if (IsModernMarker(lines[i], "START")) {
      begin = i + 1;
      break;
    }
  }
  for (size_t i = begin; i < lines.size(); ++i) {
    if (IsModernMarker(lines[i], "END")) {
      end = i;
      break;
    }
  }

  // Old "small print" headers and footers, one per concatenated volume.
  std::string out;
  out.reserve(text.size());
  for (size_t i = begin; i < end; ++i) {
    if (IsOldHeaderStart(lines[i])) {
      size_t limit = std::min(end, i + kMaxOldHeaderLines);
      size_t j = i + 1;
      while (j < limit && !IsOldHeaderEnd(lines[j])) ++j;
      if (j < limit) {
        i = j;  // drop header start .. small-print end, inclusive
        continue;
      }
    }
    if (IsOldFooter(lines[i])) {
      // The footer's title may wrap onto following lines (Sherlock's does); they end at the next blank line.
      while (i + 1 < end && !IsBlank(lines[i + 1]) && !IsOldHeaderStart(lines[i + 1])) ++i;
      continue;
    }
    out.append(lines[i]);
  }
  return out;
}

std::string StripVerseReferences(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::string previous_book;
  for (std::string_view line : Lines(text)) {
    std::string_view book;
    size_t len = VerseReferenceLength(line, &book);
    if (len == 0) {
      out.append(line);
      continue;
    }
    if (!previous_book.empty() && book != previous_book) out.push_back('\n');
    previous_book = std::string(book);
    out.append(line.substr(len));
  }
  return out;
}

std::string CleanBookText(std::string_view raw, const CleanOptions& options) {
  std::string text = StripGutenbergBoilerplate(NormalizeNewlines(ToUtf8(raw)));
  if (options.strip_verse_references) text = StripVerseReferences(text);

  // Trim blank lines at both ends (boilerplate removal leaves some), end with exactly one '\n'.
  std::vector<std::string_view> lines = Lines(text);
  size_t first = 0, last = lines.size();
  while (first < last && IsBlank(lines[first])) ++first;
  while (last > first && IsBlank(lines[last - 1])) --last;
  std::string out;
  out.reserve(text.size());
  for (size_t i = first; i < last; ++i) out.append(lines[i]);
  if (!out.empty() && out.back() != '\n') out.push_back('\n');
  return out;
}

absl::StatusOr<std::string> LoadCleanBook(const std::string& data_dir, const BookSpec& book) {
  const std::string path = RawBookPath(data_dir, book);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open raw book '", std::string(book.name), "' (",
                                            std::strerror(errno), "); fetch the demo corpus with ",
                                            "`launch/fetch_corpus.sh ", data_dir, "`"));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrCat(path, ": read error; re-fetch it with `launch/fetch_corpus.sh ", data_dir, "`"));
  }
  std::string raw = buffer.str();
  if (!book.austen_record.empty()) {
    absl::StatusOr<std::vector<std::vector<std::string>>> records = DecodeRCharacterVectors(raw, path);
    if (!records.ok()) return records.status();
    raw.clear();
    for (const std::vector<std::string>& lines : *records) {
      if (lines.empty() || !EqualsIgnoreCase(lines[0], book.austen_record)) continue;
      for (const std::string& line : lines) absl::StrAppend(&raw, line, "\n");
      break;
    }
    if (raw.empty()) {
      return absl::DataLossError(absl::StrCat(path, ": no novel titled '", std::string(book.austen_record),
                                              "'; re-fetch it with `launch/fetch_corpus.sh ", data_dir, "`"));
    }
  }
  std::string text = CleanBookText(raw, book.clean);
  if (text.empty()) {
    return absl::DataLossError(absl::StrCat(path, ": no text left after cleaning; re-fetch it with ",
                                            "`launch/fetch_corpus.sh ", data_dir, "`"));
  }
  return text;
}

}  // namespace nats::data
