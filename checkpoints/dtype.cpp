#include "checkpoints/dtype.h"

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace nats::checkpoint {

absl::StatusOr<DType> ToDType(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float:
      return FLOAT32;
    case c10::ScalarType::Double:
      return FLOAT64;
    case c10::ScalarType::Long:
      return INT64;
    case c10::ScalarType::Int:
      return INT32;
    case c10::ScalarType::Byte:
      return UINT8;
    case c10::ScalarType::BFloat16:
      return BFLOAT16;
    case c10::ScalarType::Half:
      return FLOAT16;
    case c10::ScalarType::Char:
      return INT8;
    case c10::ScalarType::Bool:
      return BOOL;
    default:
      return absl::InvalidArgumentError(absl::StrCat("checkpoints cannot store tensors of dtype ",
                                                     c10::toString(type),
                                                     "; convert it to a real or integer type before saving"));
  }
}

c10::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case FLOAT32:
      return c10::ScalarType::Float;
    case FLOAT64:
      return c10::ScalarType::Double;
    case INT64:
      return c10::ScalarType::Long;
    case INT32:
      return c10::ScalarType::Int;
    case UINT8:
      return c10::ScalarType::Byte;
    case BFLOAT16:
      return c10::ScalarType::BFloat16;
    case FLOAT16:
      return c10::ScalarType::Half;
    case INT8:
      return c10::ScalarType::Char;
    case BOOL:
      return c10::ScalarType::Bool;
    default:
      break;
  }
  TORCH_INTERNAL_ASSERT(false, "ToScalarType: unvalidated checkpoint dtype ", static_cast<int>(dtype));
  return c10::ScalarType::Undefined;
}

int64_t ElementSize(DType dtype) {
  switch (dtype) {
    case FLOAT64:
    case INT64:
      return 8;
    case FLOAT32:
    case INT32:
      return 4;
    case BFLOAT16:
    case FLOAT16:
      return 2;
    case UINT8:
    case INT8:
    case BOOL:
      return 1;
    default:
      return 0;
  }
}

std::string DTypeName(DType dtype) {
  switch (dtype) {
    case FLOAT32:
      return "float32";
    case FLOAT64:
      return "float64";
    case INT64:
      return "int64";
    case INT32:
      return "int32";
    case UINT8:
      return "uint8";
    case BFLOAT16:
      return "bfloat16";
    case FLOAT16:
      return "float16";
    case INT8:
      return "int8";
    case BOOL:
      return "bool";
    default:
      return absl::StrCat("dtype(", static_cast<int>(dtype), ")");
  }
}

}  // namespace nats::checkpoint
