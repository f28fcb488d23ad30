#include "runtime/event_file_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoints/crc32c.h"
#include "runtime/tensorboard_event.pb.h"

namespace nats {
namespace {

double WallTime() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

void PutLittleEndian(uint64_t v, int bytes, char* out) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

uint32_t MaskedCrc32c(const void* data, size_t size) {
  const uint32_t crc = checkpoint::Crc32c(0, data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

absl::StatusOr<std::unique_ptr<EventFileWriter>> EventFileWriter::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(dir, ": cannot create the TensorBoard directory (", ec.message(), ")"));
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  const std::string path =
      (std::filesystem::path(dir) / absl::StrCat("events.out.tfevents.", now, ".", host, ".", getpid()))
          .string();
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (file == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create the event file (", std::strerror(errno), ")"));
  }
  std::unique_ptr<EventFileWriter> writer(new EventFileWriter(path, file));
  tensorboard::Event first;
  first.set_wall_time(WallTime());
  first.set_file_version("brain.Event:2");
  if (absl::Status s = writer->WriteRecord(first.SerializeAsString()); !s.ok()) return s;
  return writer;
}

EventFileWriter::~EventFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status EventFileWriter::WriteScalars(int64_t step,
                                           const std::vector<std::pair<std::string, double>>& scalars) {
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  for (const auto& [tag, value] : scalars) {
    tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  return WriteRecord(event.SerializeAsString());
}

absl::Status EventFileWriter::WriteRecord(const std::string& data) {
  char header[12];
  PutLittleEndian(data.size(), 8, header);
  PutLittleEndian(MaskedCrc32c(header, 8), 4, header + 8);
  char footer[4];
  PutLittleEndian(MaskedCrc32c(data.data(), data.size()), 4, footer);
  if (std::fwrite(header, 1, sizeof(header), file_) != sizeof(header) ||
      std::fwrite(data.data(), 1, data.size(), file_) != data.size() ||
      std::fwrite(footer, 1, sizeof(footer), file_) != sizeof(footer) || std::fflush(file_) != 0) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot write a TensorBoard event (", std::strerror(errno), ")"));
  }
  return absl::OkStatus();
}

}  // namespace nats
