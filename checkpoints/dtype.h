// checkpoints/dtype.h
//
// The mapping between LibTorch scalar types and the checkpoint format's DType (checkpoint.proto). The
// format names its own dtypes so that a checkpoint does not depend on LibTorch's enum numbering.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "checkpoints/checkpoint.pb.h"

namespace nats::checkpoint {

// InvalidArgument for scalar types the format does not store (complex, quantized, ...).
absl::StatusOr<DType> ToDType(c10::ScalarType type);
// Precondition: `dtype` is a known, specified value (the reader validates manifests first).
c10::ScalarType ToScalarType(DType dtype);
// Bytes per element; 0 for DTYPE_UNSPECIFIED or an unknown value.
int64_t ElementSize(DType dtype);
// "float32", "int64", ...: the spelling used in messages and by `nats inspect`.
std::string DTypeName(DType dtype);

}  // namespace nats::checkpoint
