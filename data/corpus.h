// data/corpus.h
//
// The demo corpus: thirteen whole public-domain books fetched by launch/fetch_corpus.sh into
// <data_dir>/books/raw/ (seven .txt files, and austen.rdb holding six novels; see
// shared/reference/data-sources.md), and the cleaning that turns each raw book into plain UTF-8 text with LF
// line ends and without Project Gutenberg boilerplate. The split is by whole book, PG-19 style: no validation
// text is ever seen in training, not even a paragraph. Every function here is a pure function of its input
// (LoadCleanBook also reads one file).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace nats::data {

enum class Split { kTrain, kVal };
std::string_view SplitName(Split split);  // "train" | "val"

struct CleanOptions {
  // KJV only: drop the `Ge1:1 ` verse reference that starts every line (see StripVerseReferences).
  bool strip_verse_references = false;
};

struct BookSpec {
  std::string_view name;  // short name; the raw file is books/raw/<name>.txt unless austen_record is set
  std::string_view title;
  Split split;
  CleanOptions clean;
  // Jane Austen's novels: the record of books/raw/austen.rdb whose first line is this (ignoring case).
  std::string_view austen_record = {};
};

// The demo books in a fixed order (the order of documents in the shards).
absl::Span<const BookSpec> DemoBooks();

// <data_dir>/books/raw/<name>.txt, or <data_dir>/books/raw/austen.rdb for the Austen novels.
std::string RawBookPath(const std::string& data_dir, const BookSpec& book);

// The character vectors of an R lazy-load database (.rdb), the form r-cran-janeaustenr ships its novels in:
// a sequence of records [uint32 big-endian uncompressed size][zlib stream], each an XDR-serialised (format 2
// or 3) character vector (STRSXP) of lines. NA strings come back empty. DataLoss naming `path` for anything
// else.
absl::StatusOr<std::vector<std::vector<std::string>>> DecodeRCharacterVectors(std::string_view bytes,
                                                                              const std::string& path);

// --- Cleaning steps (public so that tests can hold each one to synthetic input). ---

// Windows-1252 -> UTF-8. Windows-1252 rather than plain Latin-1 because the one non-UTF-8 book (Poe) is
// CP1252: it uses 0x86/0x87 for the dagger signs of "The Gold-Bug" cipher and 0x9C for the "oe" ligature,
// which Latin-1 would turn into invisible C1 control characters. For bytes 0xA0-0xFF the two encodings agree.
// The five bytes CP1252 leaves undefined map to the same-numbered code point (as the WHATWG decoder does).
std::string Cp1252ToUtf8(std::string_view bytes);

// Text as UTF-8: unchanged when it is valid UTF-8, otherwise decoded as CP1252 (no book mixes the two).
std::string ToUtf8(std::string_view raw);

// Drops a leading UTF-8 byte order mark and turns CRLF (and lone CR) into LF.
std::string NormalizeNewlines(std::string_view text);

// Removes Project Gutenberg boilerplate, when present (input has LF line ends):
//  * modern files: everything up to and including the `*** START OF` line and from the `*** END OF` line on;
//  * old "small print" files (possibly several volumes concatenated, as Poe is): each header block from
//    `The Project Gutenberg Etext of` through the `*END*THE SMALL PRINT` line, and each `End of The Project
//    Gutenberg Etext` line;
//  * in both: the `End of (the) Project Gutenberg ...` closing line and its wrapped continuation.
// Text without markers comes back unchanged.
std::string StripGutenbergBoilerplate(std::string_view text);

// KJV: removes the reference prefix (`Ge1:1 `, `1Cor13:4 `, `SSol1:1 `) of each verse line and puts a blank
// line where the book changes. Lines without a prefix are kept as they are.
std::string StripVerseReferences(std::string_view text);

// All of the above in order, then leading/trailing blank lines trimmed and exactly one final newline.
std::string CleanBookText(std::string_view raw, const CleanOptions& options);

// Reads RawBookPath and cleans it. A missing file is NotFound naming the file and launch/fetch_corpus.sh.
absl::StatusOr<std::string> LoadCleanBook(const std::string& data_dir, const BookSpec& book);

}  // namespace nats::data
