// data/token_shard.cpp: token shard writer (temp file + fsync + rename) and memory-mapped reader.
#include "data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nats::data {
namespace {

// Tokens and offsets are stored little-endian and read in place from the mapping.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token shards are read in place: little-endian hosts only");
static_assert(sizeof(size_t) == 8, "64-bit hosts only: shards may exceed 4 GiB");

// Header field offsets (see token_shard.h).
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderSize = 12;
constexpr size_t kOffVocab = 16;
constexpr size_t kOffWidth = 20;
constexpr size_t kOffTokens = 24;
constexpr size_t kOffDocs = 32;
constexpr size_t kOffPayloadCrc = 40;
// Version 2 only.
constexpr size_t kOffVocabHash = 48;
constexpr size_t kOffTokenizerName = 56;  // kTokenizerNameCapacity bytes, NUL-padded
// CRC32 of the header bytes before it: the header's last 4 bytes (60 in version 1, 124 in version 2).
size_t HeaderCrcOffset(uint32_t header_size) { return header_size - 4; }
static_assert(kOffTokenizerName + kTokenizerNameCapacity <= kTokenShardHeaderSize - 4);

constexpr char kRecreate[] = "; re-create it with `nats prepare`";

// An internal invariant (a caller bug, not a user error): abort with context, never continue silently.
void CheckOrDie(bool ok, const char* what, const std::string& path) {
  if (!ok) {
    std::fprintf(stderr, "FATAL token_shard (%s): %s\n", path.c_str(), what);
    std::abort();
  }
}

void PutU32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void PutU64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t GetU32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t GetU64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// zlib's crc32 takes a 32-bit length; feed it in 1 GiB pieces so shards of any size work.
uint32_t Crc32(uint32_t crc, const unsigned char* data, uint64_t size) {
  constexpr uint64_t kPiece = uint64_t{1} << 30;
  while (size > 0) {
    uInt n = static_cast<uInt>(size < kPiece ? size : kPiece);
    crc = static_cast<uint32_t>(crc32(crc, data, n));
    data += n;
    size -= n;
  }
  return crc;
}

uint64_t AlignUp8(uint64_t x) { return (x + 7) & ~uint64_t{7}; }

std::string ErrnoText() { return std::strerror(errno); }

}  // namespace

int TokenWidthForVocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// ---------------------------------------------------------------------------------------------------------------
// Writer

TokenShardWriter::TokenShardWriter(std::string path, std::string tmp_path, int fd, int64_t vocab_size,
                                   TokenizerIdentity tokenizer)
    : path_(std::move(path)),
      tmp_path_(std::move(tmp_path)),
      fd_(fd),
      vocab_size_(vocab_size),
      tokenizer_(std::move(tokenizer)),
      width_(TokenWidthForVocab(vocab_size)),
      crc_(static_cast<uint32_t>(crc32(0, nullptr, 0))) {
  buffer_.reserve(1 << 20);
}

TokenShardWriter::TokenShardWriter(TokenShardWriter&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_path_(std::move(other.tmp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      vocab_size_(other.vocab_size_),
      tokenizer_(std::move(other.tokenizer_)),
      width_(other.width_),
      num_tokens_(other.num_tokens_),
      crc_(other.crc_),
      doc_starts_(std::move(other.doc_starts_)),
      buffer_(std::move(other.buffer_)) {}

TokenShardWriter::~TokenShardWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());
  }
}

absl::StatusOr<TokenShardWriter> TokenShardWriter::Create(const std::string& path, int64_t vocab_size,
                                                          const TokenizerIdentity& tokenizer) {
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": vocab size ", vocab_size, " is out of range (1 .. 2^31)"));
  }
  if (tokenizer.name.size() >= kTokenizerNameCapacity || tokenizer.name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tokenizer name \"", tokenizer.name,
                                                   "\" is longer than ", kTokenizerNameCapacity - 1,
                                                   " bytes or holds a NUL"));
  }
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        tmp, ": cannot create (", ErrnoText(), "); check that the output directory exists and is writable"));
  }
  TokenShardWriter writer(path, tmp, fd, vocab_size, tokenizer);
  // Placeholder header; the real one is written by Finish once the counts and checksum are known.
  unsigned char zeros[kTokenShardHeaderSize] = {};
  absl::Status st = writer.WriteAll(zeros, sizeof(zeros));
  if (!st.ok()) return st;
  return writer;
}

absl::Status TokenShardWriter::WriteAll(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat(tmp_path_, ": write failed (", ErrnoText(),
                                              "); free disk space and ", "re-run `nats prepare`"));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status TokenShardWriter::CheckIds(absl::Span<const int32_t> tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": token id ", tokens[i], " at position ", i,
                                                     " of document ", doc_starts_.size(),
                                                     " is outside the vocabulary [0, ", vocab_size_, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status TokenShardWriter::AddDocument(absl::Span<const int32_t> tokens) {
  CheckOrDie(fd_ >= 0, "AddDocument after Finish", path_);
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": empty document (document ", doc_starts_.size(),
                                                   "); every document needs at least one token"));
  }
  if (absl::Status s = CheckIds(tokens); !s.ok()) return s;
  doc_starts_.push_back(num_tokens_);
  return AppendTokens(tokens);
}

absl::Status TokenShardWriter::AppendToDocument(absl::Span<const int32_t> tokens) {
  CheckOrDie(fd_ >= 0, "AppendToDocument after Finish", path_);
  CheckOrDie(!doc_starts_.empty(), "AppendToDocument before the first AddDocument", path_);
  if (absl::Status s = CheckIds(tokens); !s.ok()) return s;
  return AppendTokens(tokens);
}

absl::Status TokenShardWriter::AppendTokens(absl::Span<const int32_t> tokens) {
  constexpr size_t kFlushBytes = size_t{1} << 20;
  while (!tokens.empty()) {
    // Fill the buffer up to the flush size in one resize, then store each id's low `width_` bytes
    // (little-endian: the low bytes come first).
    const size_t room = std::max<size_t>(1, (kFlushBytes - std::min(buffer_.size(), kFlushBytes)) / width_);
    const size_t n = std::min(tokens.size(), room);
    buffer_.resize(buffer_.size() + n * width_);
    unsigned char* out = buffer_.data() + buffer_.size() - n * width_;
    for (size_t i = 0; i < n; ++i) {
      const auto v = static_cast<uint32_t>(tokens[i]);
      std::memcpy(out + i * width_, &v, width_);
    }
    tokens.remove_prefix(n);
    num_tokens_ += n;
    if (buffer_.size() >= kFlushBytes) {
      crc_ = Crc32(crc_, buffer_.data(), buffer_.size());
      absl::Status st = WriteAll(buffer_.data(), buffer_.size());
      if (!st.ok()) return st;
      buffer_.clear();
    }
  }
  return absl::OkStatus();
}

absl::Status TokenShardWriter::Finish() {
  CheckOrDie(fd_ >= 0, "Finish called twice", path_);
  // Tokens not yet written, padding (outside the checksum), then the offsets (inside it).
  crc_ = Crc32(crc_, buffer_.data(), buffer_.size());
  uint64_t token_end = kTokenShardHeaderSize + num_tokens_ * width_;
  buffer_.resize(buffer_.size() + (AlignUp8(token_end) - token_end), 0);
  const auto* offsets = reinterpret_cast<const unsigned char*>(doc_starts_.data());
  crc_ = Crc32(crc_, offsets, doc_starts_.size() * 8);
  absl::Status st = WriteAll(buffer_.data(), buffer_.size());
  if (st.ok()) st = WriteAll(offsets, doc_starts_.size() * 8);
  if (!st.ok()) return st;

  unsigned char header[kTokenShardHeaderSize] = {};
  std::memcpy(header + kOffMagic, kTokenShardMagic, 8);
  PutU32(header + kOffVersion, kTokenShardVersion);
  PutU32(header + kOffHeaderSize, kTokenShardHeaderSize);
  PutU32(header + kOffVocab, static_cast<uint32_t>(vocab_size_));
  PutU32(header + kOffWidth, static_cast<uint32_t>(width_));
  PutU64(header + kOffTokens, num_tokens_);
  PutU64(header + kOffDocs, doc_starts_.size());
  PutU32(header + kOffPayloadCrc, crc_);
  PutU64(header + kOffVocabHash, tokenizer_.vocab_hash);
  std::memcpy(header + kOffTokenizerName, tokenizer_.name.data(), tokenizer_.name.size());
  const size_t crc_at = HeaderCrcOffset(kTokenShardHeaderSize);
  PutU32(header + crc_at, Crc32(static_cast<uint32_t>(crc32(0, nullptr, 0)), header, crc_at));
  if (::pwrite(fd_, header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header))) {
    return absl::DataLossError(absl::StrCat(tmp_path_, ": header write failed (", ErrnoText(), ")"));
  }
  if (::fsync(fd_) != 0) {
    return absl::DataLossError(absl::StrCat(tmp_path_, ": fsync failed (", ErrnoText(), ")"));
  }
  ::close(std::exchange(fd_, -1));
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    std::string err = ErrnoText();
    ::unlink(tmp_path_.c_str());
    return absl::DataLossError(absl::StrCat(path_, ": cannot rename ", tmp_path_, " into place (", err, ")"));
  }
  // Make the rename itself durable.
  std::string dir = path_.find('/') == std::string::npos ? "." : path_.substr(0, path_.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::Status WriteTokenShard(const std::string& path, int64_t vocab_size,
                             const std::vector<std::vector<int32_t>>& documents,
                             const TokenizerIdentity& tokenizer) {
  absl::StatusOr<TokenShardWriter> writer = TokenShardWriter::Create(path, vocab_size, tokenizer);
  if (!writer.ok()) return writer.status();
  for (const auto& doc : documents) {
    absl::Status st = writer->AddDocument(doc);
    if (!st.ok()) return st;
  }
  return writer->Finish();
}

// ---------------------------------------------------------------------------------------------------------------
// Reader

TokenShard::TokenShard(TokenShard&& other) noexcept { *this = std::move(other); }

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    vocab_size_ = other.vocab_size_;
    version_ = other.version_;
    tokenizer_ = std::move(other.tokenizer_);
    width_ = other.width_;
    num_tokens_ = other.num_tokens_;
    num_docs_ = other.num_docs_;
    checksum_ = other.checksum_;
    tokens_ = std::exchange(other.tokens_, nullptr);
    doc_starts_ = std::exchange(other.doc_starts_, nullptr);
  }
  return *this;
}

TokenShard::~TokenShard() { Unmap(); }

void TokenShard::Unmap() {
  if (map_ != nullptr) {
    ::munmap(const_cast<unsigned char*>(map_), map_size_);
    map_ = nullptr;
  }
}

absl::StatusOr<TokenShard> TokenShard::Open(const std::string& path, OpenOptions options) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such token shard; create it with `nats prepare`"));
    }
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open token shard (", ErrnoText(), ")"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string err = ErrnoText();
    ::close(fd);
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot stat token shard (", err, ")"));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < kTokenShardHeaderSizeV1) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": truncated token shard (", size,
                                            " bytes, a header alone is ", kTokenShardHeaderSizeV1, ")",
                                            kRecreate));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": mmap of ", size, " bytes failed (", ErrnoText(), ")"));
  }
  TokenShard shard;
  shard.path_ = path;
  shard.map_ = static_cast<const unsigned char*>(map);
  shard.map_size_ = size;
  const unsigned char* h = shard.map_;

  if (std::memcmp(h + kOffMagic, kTokenShardMagic, 8) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a token shard (bad magic)", kRecreate));
  }
  const uint32_t version = GetU32(h + kOffVersion);
  if (version != 1 && version != kTokenShardVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": token shard format version ", version,
                                                      ", this build reads versions 1 and ",
                                                      kTokenShardVersion, kRecreate));
  }
  const uint32_t expected_header = version == 1 ? kTokenShardHeaderSizeV1 : kTokenShardHeaderSize;
  if (size < expected_header) {
    return absl::DataLossError(absl::StrCat(path, ": truncated token shard (", size,
                                            " bytes, the header alone is ", expected_header, ")", kRecreate));
  }
  const size_t crc_at = HeaderCrcOffset(expected_header);
  if (GetU32(h + crc_at) != Crc32(static_cast<uint32_t>(crc32(0, nullptr, 0)), h, crc_at)) {
    return absl::DataLossError(
        absl::StrCat(path, ": token shard header is corrupt (bad header checksum)", kRecreate));
  }
  shard.version_ = static_cast<int>(version);
  if (version >= 2) {
    const char* name = reinterpret_cast<const char*>(h + kOffTokenizerName);
    shard.tokenizer_.name.assign(name, strnlen(name, kTokenizerNameCapacity));
    shard.tokenizer_.vocab_hash = GetU64(h + kOffVocabHash);
  }
  uint32_t header_size = GetU32(h + kOffHeaderSize);
  shard.vocab_size_ = GetU32(h + kOffVocab);
  shard.width_ = static_cast<int>(GetU32(h + kOffWidth));
  shard.num_tokens_ = GetU64(h + kOffTokens);
  shard.num_docs_ = GetU64(h + kOffDocs);
  shard.checksum_ = GetU32(h + kOffPayloadCrc);
  if (header_size != expected_header || shard.vocab_size_ <= 0 ||
      shard.width_ != TokenWidthForVocab(shard.vocab_size_)) {
    return absl::DataLossError(absl::StrCat(path, ": inconsistent token shard header (header size ",
                                            header_size, ", vocab ", shard.vocab_size_, ", token width ",
                                            shard.width_, ")", kRecreate));
  }
  // Compare counts against the file size before multiplying, so a corrupt count cannot overflow.
  bool fits = shard.num_tokens_ <= size / shard.width_ && shard.num_docs_ <= size / 8;
  uint64_t offsets_begin = fits ? AlignUp8(header_size + shard.num_tokens_ * shard.width_) : 0;
  uint64_t expected = fits ? offsets_begin + shard.num_docs_ * 8 : 0;
  if (!fits || expected > size) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated token shard (", size, " bytes; the header promises ",
                     shard.num_tokens_, " tokens and ", shard.num_docs_, " documents",
                     fits ? absl::StrCat(" = ", expected, " bytes") : "", ")", kRecreate));
  }
  if (expected < size) {
    return absl::DataLossError(absl::StrCat(path, ": token shard has ", size - expected,
                                            " trailing bytes after its document offsets", kRecreate));
  }
  shard.tokens_ = h + header_size;
  shard.doc_starts_ =
      reinterpret_cast<const uint64_t*>(h + offsets_begin);  // 8-aligned: mmap is page-aligned

  for (uint64_t d = 0; d < shard.num_docs_; ++d) {
    uint64_t s = shard.doc_starts_[d];
    bool ok = d == 0 ? s == 0 : s > shard.doc_starts_[d - 1];
    if (!ok || s >= shard.num_tokens_) {
      return absl::DataLossError(absl::StrCat(path, ": document offset ", d, " (", s,
                                              ") is out of order or past the tokens", kRecreate));
    }
  }
  if (options.verify_checksum) {
    absl::Status verified = shard.Verify();
    if (!verified.ok()) return verified;
  }
  return shard;
}

absl::Status TokenShard::Verify() const {
  uint32_t crc = static_cast<uint32_t>(crc32(0, nullptr, 0));
  crc = Crc32(crc, tokens_, num_tokens_ * width_);
  crc = Crc32(crc, reinterpret_cast<const unsigned char*>(doc_starts_), num_docs_ * 8);
  if (crc != checksum_) {
    return absl::DataLossError(absl::StrCat(path_, ": token shard checksum mismatch (stored ", checksum_,
                                            ", computed ", crc, "): the file is corrupt", kRecreate));
  }
  return absl::OkStatus();
}

int32_t TokenShard::token(uint64_t i) const {
  CheckOrDie(i < num_tokens_, "token index out of range", path_);
  if (width_ == 2) {
    uint16_t v;
    std::memcpy(&v, tokens_ + i * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens_ + i * 4, 4);
  return static_cast<int32_t>(v);
}

void TokenShard::Read(uint64_t begin, uint64_t count, int32_t* out) const {
  CheckOrDie(begin <= num_tokens_ && count <= num_tokens_ - begin, "Read range outside the shard", path_);
  if (width_ == 4) {
    std::memcpy(out, tokens_ + begin * 4, count * 4);
    return;
  }
  const unsigned char* p = tokens_ + begin * 2;
  for (uint64_t i = 0; i < count; ++i) {
    uint16_t v;
    std::memcpy(&v, p + i * 2, 2);
    out[i] = v;
  }
}

}  // namespace nats::data
