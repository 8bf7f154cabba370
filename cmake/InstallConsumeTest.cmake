# Install-and-consume check, run as a script:
#
#   cmake -DASYNCOPT_SOURCE_DIR=... -DASYNCOPT_BINARY_DIR=... -DCONSUMER_SOURCE_DIR=...
#         -DWORK_DIR=... [-DPACKAGE_DIR=... -DINCLUDE_DIR=... -DCONFIG=...
#         -DGENERATOR=... -DCXX_COMPILER=... ...]
#         -P InstallConsumeTest.cmake
#
# 1. installs the configured asyncopt build into a fresh prefix under WORK_DIR,
# 2. checks that the installed package is relocatable (no source or build
#    paths inside) and that its version file is architecture independent,
# 3. configures the consumer (CONSUMER_SOURCE_DIR: tests/consumer or
#    tests/consumer_lean) against that prefix with find_package(asyncopt),
# 4. builds it and 5. runs the consumer executable.
# Any failure stops the script with a message naming the step.
# PREFIX_PATH, CXX_COMPILER_LAUNCHER, COMPONENTS and CONSUMER_ARGS use "|" as list
# separator.
#
# Variants: -DCOMPONENTS=zmq|cuda asks for those components and links their targets;
# -DCONSUMER_ARGS=-DA=1|-DB=2 passes more arguments to the consumer's configure step;
# -DEXPECT_FAILURE=<regex> expects step 3 to fail with output matching <regex> (and
# stops there); -DSUBDIRECTORY=ON skips steps 1-2 and has the consumer take asyncopt
# with add_subdirectory(ASYNCOPT_SOURCE_DIR) instead of find_package.

cmake_minimum_required(VERSION 3.25)

foreach(_required ASYNCOPT_SOURCE_DIR ASYNCOPT_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT ${_required})
    message(FATAL_ERROR "install_and_consume: -D${_required}=... is required")
  endif()
endforeach()

set(_prefix "${WORK_DIR}/prefix")
set(_consumer_build "${WORK_DIR}/consumer-build")
if(NOT PACKAGE_DIR)
  set(PACKAGE_DIR share/cmake/asyncopt)
endif()
if(NOT INCLUDE_DIR)
  set(INCLUDE_DIR include)
endif()
set(_cmake_dir "${_prefix}/${PACKAGE_DIR}")

function(_step name)
  message(STATUS "install_and_consume: ${name}")
  execute_process(${ARGN} RESULT_VARIABLE _result)
  if(NOT _result EQUAL 0)
    message(FATAL_ERROR "install_and_consume: step \"${name}\" failed (${_result})")
  endif()
endfunction()

get_filename_component(_consumer_name "${CONSUMER_SOURCE_DIR}" NAME)

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

if(NOT SUBDIRECTORY)
# 1. Install.
set(_install_args --install "${ASYNCOPT_BINARY_DIR}" --prefix "${_prefix}")
if(CONFIG)
  list(APPEND _install_args --config "${CONFIG}")
endif()
_step("install into ${_prefix}" COMMAND "${CMAKE_COMMAND}" ${_install_args})

# 2. Inspect the installed package.
foreach(_file asyncoptConfig.cmake asyncoptConfigVersion.cmake asyncoptTargets.cmake
              asyncoptXsimd.cmake)
  if(NOT EXISTS "${_cmake_dir}/${_file}")
    message(FATAL_ERROR "install_and_consume: ${_cmake_dir}/${_file} was not installed")
  endif()
endforeach()
if(NOT EXISTS "${_prefix}/${INCLUDE_DIR}/asyncopt/asyncopt.hpp")
  message(FATAL_ERROR
    "install_and_consume: ${_prefix}/${INCLUDE_DIR}/asyncopt/asyncopt.hpp was not installed")
endif()

# The version file must accept a consumer with another pointer size: the package
# is header-only, so it is architecture independent.
function(_check_arch_independent version_file)
  set(CMAKE_SIZEOF_VOID_P 2)
  set(PACKAGE_FIND_NAME asyncopt)
  set(PACKAGE_FIND_VERSION "")
  include("${version_file}")
  if(PACKAGE_VERSION_UNSUITABLE)
    message(FATAL_ERROR
      "install_and_consume: ${version_file} rejects a consumer with another pointer size; "
      "a header-only package must be ARCH_INDEPENDENT")
  endif()
endfunction()
_check_arch_independent("${_cmake_dir}/asyncoptConfigVersion.cmake")

# Package files and headers only: installed programs may legitimately carry source
# paths in their debug information.
file(GLOB_RECURSE _installed_files LIST_DIRECTORIES false
  "${_prefix}/*.cmake" "${_prefix}/*.pc" "${_prefix}/*.h" "${_prefix}/*.hpp" "${_prefix}/*.cuh")
foreach(_file IN LISTS _installed_files)
  file(READ "${_file}" _content)
  foreach(_tree ASYNCOPT_SOURCE_DIR ASYNCOPT_BINARY_DIR)
    string(FIND "${_content}" "${${_tree}}" _at)
    if(NOT _at EQUAL -1)
      message(FATAL_ERROR
        "install_and_consume: installed file ${_file} mentions ${${_tree}}; "
        "the package must not refer to the source or build tree")
    endif()
  endforeach()
endforeach()

endif()

# 3. Configure the consumer.
string(REPLACE "|" ";" _prefix_path "${PREFIX_PATH}")
list(PREPEND _prefix_path "${_prefix}")
string(REPLACE ";" "\\;" _prefix_path "${_prefix_path}")
string(REPLACE "|" ";" _launcher "${CXX_COMPILER_LAUNCHER}")
string(REPLACE ";" "\\;" _launcher "${_launcher}")

set(_configure_args
  -S "${CONSUMER_SOURCE_DIR}"
  -B "${_consumer_build}"
  "-DCMAKE_PREFIX_PATH=${_prefix_path}")
if(GENERATOR)
  list(APPEND _configure_args -G "${GENERATOR}")
endif()
if(GENERATOR_PLATFORM)
  list(APPEND _configure_args -A "${GENERATOR_PLATFORM}")
endif()
if(GENERATOR_TOOLSET)
  list(APPEND _configure_args -T "${GENERATOR_TOOLSET}")
endif()
if(MAKE_PROGRAM)
  list(APPEND _configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(TOOLCHAIN_FILE)
  list(APPEND _configure_args "-DCMAKE_TOOLCHAIN_FILE=${TOOLCHAIN_FILE}")
endif()
if(CXX_COMPILER)
  list(APPEND _configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(_launcher)
  list(APPEND _configure_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${_launcher}")
endif()
if(CXX_FLAGS)
  list(APPEND _configure_args "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}")
endif()
if(CONFIG)
  list(APPEND _configure_args "-DCMAKE_BUILD_TYPE=${CONFIG}")
endif()
if(COMPONENTS)
  string(REPLACE "|" "," _components "${COMPONENTS}")
  list(APPEND _configure_args "-DCONSUMER_COMPONENTS=${_components}")
endif()
if(SUBDIRECTORY)
  list(APPEND _configure_args "-DASYNCOPT_SOURCE_DIR=${ASYNCOPT_SOURCE_DIR}")
endif()
if(CONSUMER_ARGS)
  string(REPLACE "|" ";" _consumer_args "${CONSUMER_ARGS}")
  list(APPEND _configure_args ${_consumer_args})
endif()
if(EXPECT_FAILURE)
  message(STATUS "install_and_consume: configure tests/${_consumer_name}, expecting it to fail")
  execute_process(COMMAND "${CMAKE_COMMAND}" ${_configure_args}
    RESULT_VARIABLE _result OUTPUT_VARIABLE _output ERROR_VARIABLE _output)
  if(_result EQUAL 0)
    message(FATAL_ERROR "install_and_consume: configuring tests/${_consumer_name} succeeded; "
      "expected a failure matching \"${EXPECT_FAILURE}\"")
  endif()
  # CMake wraps long messages: compare with the line breaks and indents removed.
  string(REGEX REPLACE "\n +" " " _output_joined "${_output}")
  if(NOT _output_joined MATCHES "${EXPECT_FAILURE}")
    message(FATAL_ERROR "install_and_consume: configuring tests/${_consumer_name} failed, but not with "
      "\"${EXPECT_FAILURE}\":\n${_output}")
  endif()
  message(STATUS "install_and_consume: failed as expected")
  return()
endif()
if(SUBDIRECTORY)
  set(_how "with add_subdirectory(asyncopt)")
else()
  set(_how "against the installed package")
endif()
_step("configure tests/${_consumer_name} ${_how}" COMMAND "${CMAKE_COMMAND}" ${_configure_args})

if(NOT SUBDIRECTORY)
file(STRINGS "${_consumer_build}/CMakeCache.txt" _found_dir REGEX "^asyncopt_DIR:")
string(REGEX REPLACE "^asyncopt_DIR:[A-Z]+=" "" _found_dir "${_found_dir}")
file(REAL_PATH "${_cmake_dir}" _expected_dir)
if(_found_dir)
  file(REAL_PATH "${_found_dir}" _found_dir)
endif()
if(NOT _found_dir STREQUAL _expected_dir)
  message(FATAL_ERROR
    "install_and_consume: the consumer found asyncopt in \"${_found_dir}\", "
    "not in the fresh prefix \"${_expected_dir}\"")
endif()
endif()

# 4. Build it.
set(_build_args --build "${_consumer_build}")
if(CONFIG)
  list(APPEND _build_args --config "${CONFIG}")
endif()
_step("build tests/${_consumer_name}" COMMAND "${CMAKE_COMMAND}" ${_build_args})

# 5. Run it.
set(_candidates "${_consumer_build}/consumer" "${_consumer_build}/consumer.exe")
if(CONFIG)
  list(APPEND _candidates "${_consumer_build}/${CONFIG}/consumer"
                          "${_consumer_build}/${CONFIG}/consumer.exe")
endif()
set(_executable "")
foreach(_candidate IN LISTS _candidates)
  if(EXISTS "${_candidate}" AND NOT IS_DIRECTORY "${_candidate}")
    set(_executable "${_candidate}")
    break()
  endif()
endforeach()
if(NOT _executable)
  message(FATAL_ERROR "install_and_consume: no consumer executable under ${_consumer_build}")
endif()
_step("run ${_executable}" COMMAND "${_executable}")

message(STATUS "install_and_consume: passed")
