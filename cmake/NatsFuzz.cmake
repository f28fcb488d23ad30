# NATS_FUZZ=ON: the sanitizer build of the parsers (tests/fuzz/run_fuzz.sh drives it, in build-fuzz/).
# Builds only the libFuzzer targets of tests/fuzz/, the libraries they need and the parser unit tests, all
# with clang's AddressSanitizer + UndefinedBehaviorSanitizer (UB aborts, so the fuzzer sees it), and
# nothing of the model, the communicators or the trainer. Only the checkpoint target links LibTorch (the
# checkpoint reader fills at::Tensor); LibTorch itself is not instrumented, our code that calls it is.
# Included from the top-level CMakeLists.txt, which returns right after.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "NATS_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++ "
                      "(tests/fuzz/run_fuzz.sh does)")
endif()

find_package(Torch REQUIRED)
find_package(absl REQUIRED)
find_package(Protobuf REQUIRED)
find_package(GTest REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3 REQUIRED)  # Debian nlohmann-json3-dev: JSON for data/ (prepare's JSONL, index.json)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED)  # Debian libssl-dev: SHA-256 (libcrypto) for data/sha256.h

set(NATS_USE_PCH OFF)  # a PCH costs more than it saves for the few LibTorch files built here
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")
# -O1: fast enough to fuzz, quick to build; line tables are enough for symbolized reports and build far faster
# than -g. fuzzer-no-link: coverage feedback in the libraries too.
set(NATS_SANITIZE "-fsanitize=address,undefined -fno-sanitize-recover=undefined")
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${NATS_SANITIZE} -fsanitize=fuzzer-no-link -fno-omit-frame-pointer -gline-tables-only -O1")
foreach(config RELEASE DEBUG RELWITHDEBINFO MINSIZEREL)  # the flags above are the whole story (asserts on)
  set(CMAKE_CXX_FLAGS_${config} "")
endforeach()
set(CMAKE_EXE_LINKER_FLAGS "${CMAKE_EXE_LINKER_FLAGS} ${NATS_SANITIZE}")

include(cmake/NatsHelpers.cmake)
enable_testing()
include_directories(${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})

# The config messages (as runtime/CMakeLists.txt defines them) and the LibTorch-free config code.
nats_protobuf_cpp(NATS_CONFIG_PROTO_SRCS ${CMAKE_SOURCE_DIR}/runtime/config.proto)
add_library(nats_config_proto STATIC ${NATS_CONFIG_PROTO_SRCS})
target_link_libraries(nats_config_proto PUBLIC protobuf::libprotobuf)
target_include_directories(nats_config_proto PUBLIC ${CMAKE_BINARY_DIR}/runtime ${CMAKE_BINARY_DIR})
add_library(nats_config STATIC ${CMAKE_SOURCE_DIR}/runtime/config.cpp ${CMAKE_SOURCE_DIR}/runtime/lr_schedule.cpp
                               ${CMAKE_SOURCE_DIR}/nats/model_shape.cpp)
target_link_libraries(nats_config PUBLIC nats_config_proto nats_data absl::status absl::statusor absl::strings)

add_subdirectory(data)
add_subdirectory(checkpoints)
add_subdirectory(tests/fuzz)
