// The error every data reader throws on bad input.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace asyncopt::io {

/// A data file is missing, unreadable or malformed.
///
/// Readers (IDX, LIBSVM, CSV) throw it with a message that names the file and what is wrong
/// with it, so that a user can fix the input without a debugger. Programming errors (a bad
/// argument that no file could cause) throw the usual std::logic_error family instead.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A path in single quotes, for messages. Built by appending: GCC 12 at -O3 warns
/// (-Wrestrict, a false positive, GCC bug 105329) on the inlined insert of "'" + path.
[[nodiscard]] inline std::string quoted(const std::filesystem::path& path) {
  std::string text;
  text.reserve(path.native().size() + 2);
  text += '\'';
  text += path.string();
  text += '\'';
  return text;
}

}  // namespace asyncopt::io
