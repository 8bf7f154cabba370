// The error every data reader throws on bad input.
#pragma once

#include <stdexcept>

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

}  // namespace asyncopt::io
