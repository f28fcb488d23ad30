// runtime/event_file_writer.h
//
// TensorBoard event files, so that `tensorboard --logdir runs/` shows a run's curves. A file
// <dir>/events.out.tfevents.<unix seconds>.<host>.<pid> is a sequence of TFRecords:
//   uint64 length (little endian) | uint32 masked CRC-32C of those 8 bytes | length bytes of a serialized
//   Event | uint32 masked CRC-32C of the data,
// where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (TFRecord's rule). The first record is an Event
// with file_version "brain.Event:2"; every later one carries a Summary of scalars
// (runtime/tensorboard_event.proto, TensorFlow's field numbers). Every write is flushed, so a killed run
// keeps what it logged; each run or resume opens a new file, as TensorFlow's writers do, and TensorBoard
// merges the files of a directory.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nats {

// TFRecord's masked CRC-32C of `size` bytes.
uint32_t MaskedCrc32c(const void* data, size_t size);

class EventFileWriter {
 public:
  // Creates `dir` if needed and a new event file in it. PermissionDenied / Internal naming the path.
  static absl::StatusOr<std::unique_ptr<EventFileWriter>> Open(const std::string& dir);
  ~EventFileWriter();

  // One Event at `step` holding every (tag, value) pair as a scalar summary; wall time is now.
  absl::Status WriteScalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);

  const std::string& path() const { return path_; }

 private:
  EventFileWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status WriteRecord(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace nats
