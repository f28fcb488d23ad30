# Small helpers shared by the folder CMakeLists.

# nats_use_torch_pch(target): use the one precompiled LibTorch header (target nats_torch_pch).
# A TU including <torch/torch.h> costs 15-30 s here and building a PCH about a minute, so every
# LibTorch target reuses a single PCH instead of building its own.
function(nats_use_torch_pch target)
  if(NATS_USE_PCH)
    if(NOT TARGET nats_torch_pch)
      add_library(nats_torch_pch STATIC ${CMAKE_SOURCE_DIR}/cmake/empty_library.cpp)
      target_link_libraries(nats_torch_pch PRIVATE ${TORCH_LIBRARIES})
      target_precompile_headers(nats_torch_pch PRIVATE ${CMAKE_SOURCE_DIR}/cmake/torch_pch.h)
    endif()
    target_precompile_headers(${target} REUSE_FROM nats_torch_pch)
  endif()
endfunction()

# The download cache the tests read (books/raw, tokenizer, npm): $NATS_CACHE at configure time, else <source>/.cache.
if(DEFINED ENV{NATS_CACHE} AND NOT "$ENV{NATS_CACHE}" STREQUAL "")
  set(NATS_TEST_CACHE_DIR "$ENV{NATS_CACHE}")
else()
  set(NATS_TEST_CACHE_DIR "${CMAKE_SOURCE_DIR}/.cache")
endif()

# nats_add_test(name SOURCES ... LIBS ...): a GoogleTest binary registered with CTest.
function(nats_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  if(NOT ARG_LIBS STREQUAL "nats_data")  # data/ tests are LibTorch-free
    nats_use_torch_pch(${name})
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "NATS_SOURCE_DIR=${CMAKE_SOURCE_DIR};NATS_BINARY_DIR=${CMAKE_BINARY_DIR};NATS_DATA_DIR=${CMAKE_SOURCE_DIR}/data;NATS_CACHE=${NATS_TEST_CACHE_DIR}")
endfunction()

# nats_add_mpi_test(name NP n BINARY target [ARGS ...]): run a test binary under mpirun with n ranks.
# Without MPI (NATS_WITH_MPI=OFF) the test is registered as skipped (ctest lists it as not run, and
# set_tests_properties on it still works).
function(nats_add_mpi_test name)
  if(NOT NATS_HAVE_MPI)
    add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} -E echo "skipped: built without MPI (NATS_WITH_MPI=OFF)")
    set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "skipped: built without MPI")
    return()
  endif()
  cmake_parse_arguments(ARG "" "NP;BINARY" "ARGS" ${ARGN})
  add_test(NAME ${name}
    COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe --bind-to none
            -np ${ARG_NP} $<TARGET_FILE:${ARG_BINARY}> ${ARG_ARGS})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "NATS_SOURCE_DIR=${CMAKE_SOURCE_DIR};NATS_BINARY_DIR=${CMAKE_BINARY_DIR};NATS_DATA_DIR=${CMAKE_SOURCE_DIR}/data;NATS_CACHE=${NATS_TEST_CACHE_DIR};OMP_NUM_THREADS=1"
    PROCESSORS ${ARG_NP})
endfunction()

# nats_protobuf_cpp(OUT_SRCS proto_path...): runs protoc from the source root, so "runtime/config.proto"
# registers under that name (other protos import it by it) and its header is <build>/runtime/config.pb.h.
function(nats_protobuf_cpp out_var)
  set(srcs)
  foreach(proto ${ARGN})
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${proto})
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(cc ${CMAKE_BINARY_DIR}/${stem}.pb.cc)
    set(h ${CMAKE_BINARY_DIR}/${stem}.pb.h)
    add_custom_command(
      OUTPUT ${cc} ${h}
      COMMAND protobuf::protoc --cpp_out=${CMAKE_BINARY_DIR} -I${CMAKE_SOURCE_DIR} ${rel}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
      DEPENDS ${proto} protobuf::protoc
      COMMENT "protoc ${rel}")
    list(APPEND srcs ${cc})
  endforeach()
  set(${out_var} ${srcs} PARENT_SCOPE)
endfunction()
