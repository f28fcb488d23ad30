// data/document_source.h
//
// The input side of `nats prepare --input`: which files a user's paths name, and the documents in them, read
// as a stream with bounded memory.
//
// Formats:
//   text   each file is one document (a 20 GB file is fine: it comes in pieces, below)
//   jsonl  each non-blank line is one JSON object and one document: the string at --text_field, a dotted path
//          into nested objects ("text", "meta.body")
// Files ending in .gz are decompressed on the fly (zlib); any other file is read as it is.
//
// Pieces. A text document longer than kPieceBytes arrives as several pieces. A piece ends only where a '\n'
// is followed by a printable ASCII byte that is not a space: no pre-tokenizer piece of GPT-2's pattern (or of
// the byte tokenizer) spans such a point, because a token that contains '\n' is all whitespace, so tokenizing
// the pieces one by one gives exactly the ids of the whole document. A document without such a point in
// kMaxPieceBytes is cut there anyway (the ids near the cut may then differ from a whole-document encode; the
// bytes never do). JSONL documents are never cut (a line must fit in kMaxLineBytes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nats::data {

enum class InputFormat { kAuto, kText, kJsonl };

// "auto" | "text" | "jsonl"; InvalidArgument naming --format otherwise.
absl::StatusOr<InputFormat> ParseInputFormat(const std::string& name);

inline constexpr size_t kPieceBytes = size_t{1} << 20;      // target piece size of a long text document
inline constexpr size_t kMaxPieceBytes = size_t{16} << 20;  // a piece is cut here if no safe point came first
inline constexpr size_t kMaxLineBytes = size_t{256} << 20;  // longest JSONL line

struct InputFile {
  std::string path;
  InputFormat format;   // kText or kJsonl (kAuto resolved by the extension)
  uint64_t size_bytes;  // on disk (compressed size for .gz): the progress bar's denominator
};

// The files the inputs name, in order: each input is a file (taken whatever its name), a directory (every
// file below it with an extension of the format: .txt .text .md for text, .jsonl .ndjson .json for jsonl,
// each also with .gz; sorted by path), or a glob(3) pattern (sorted). A file named twice is read once.
// NotFound naming the input when it matches nothing.
absl::StatusOr<std::vector<InputFile>> ExpandInputs(const std::vector<std::string>& inputs,
                                                    InputFormat format);

// One raw unit of work: a text piece or a JSONL line, not yet parsed.
struct RawDocument {
  std::string bytes;
  int file_index = 0;      // into the ExpandInputs list
  uint64_t line = 0;       // JSONL: 1-based line number; text: 0
  bool continues = false;  // text: a later piece of the previous document
  bool jsonl = false;
};

// Reads the files one after another. Not thread-safe: one reader feeds the tokenizer threads.
class DocumentReader {
 public:
  explicit DocumentReader(std::vector<InputFile> files);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // The next unit into *out: true; false at the end of the last file. A read error (or a JSONL line over
  // kMaxLineBytes) is returned as a status naming the file and, for JSONL, the line.
  absl::StatusOr<bool> Next(RawDocument* out);

  // Bytes consumed so far (compressed bytes for .gz), over all files: for progress.
  uint64_t bytes_read() const;
  const std::vector<InputFile>& files() const { return files_; }

 private:
  class GzFile;
  absl::StatusOr<bool> NextText(RawDocument* out);
  absl::StatusOr<bool> NextLine(RawDocument* out);
  absl::Status Fill();  // appends up to one buffer's worth of the current file to buffer_

  std::vector<InputFile> files_;
  int current_ = -1;
  std::unique_ptr<GzFile> file_;
  bool eof_ = true;
  uint64_t finished_bytes_ = 0;  // sizes of the files already closed
  uint64_t line_ = 0;
  bool piece_pending_ = false;  // the current text document has produced a piece
  std::string buffer_;
  size_t pos_ = 0;  // start of the unconsumed part of buffer_
};

// Where a text piece may end: the largest p in (0, text.size()] with text[p-1] == '\n' and text[p] printable
// non-space ASCII, or 0 if none. (p == size is never returned: the byte after it is unknown.)
size_t LastSafeCut(std::string_view text);

// The JSON string at a dotted path in one JSONL line. InvalidArgument (caller adds file:line) for malformed
// JSON, a missing field (naming the first missing key) or a value that is not a string.
absl::StatusOr<std::string> ExtractJsonText(std::string_view line, const std::string& field_path);

}  // namespace nats::data
