// Reader for the IDX format of the MNIST family of data sets, gzip-compressed or not.
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <zlib.h>

#include <asyncopt/io/error.hpp>

namespace asyncopt::io {

/// Element type of an IDX file, as stored in the third byte of its magic number.
///
/// Format: Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten digits",
/// http://yann.lecun.com/exdb/mnist/ (section "The IDX file format").
enum class IdxType : std::uint8_t {
  ubyte = 0x08,
  sbyte = 0x09,
  int16 = 0x0B,
  int32 = 0x0C,
  float32 = 0x0D,
  float64 = 0x0E,
};

/// Bytes per element of `type`; 0 for a value that is not one of the IDX types.
[[nodiscard]] constexpr std::size_t element_size(IdxType type) noexcept {
  switch (type) {
    case IdxType::ubyte:
    case IdxType::sbyte:
      return 1;
    case IdxType::int16:
      return 2;
    case IdxType::int32:
    case IdxType::float32:
      return 4;
    case IdxType::float64:
      return 8;
  }
  return 0;
}

/// The name of `type` as written in the enumeration ("ubyte", "float32", ...); "unknown" for
/// a value that is not one of the IDX types.
[[nodiscard]] constexpr std::string_view to_string(IdxType type) noexcept {
  switch (type) {
    case IdxType::ubyte:
      return "ubyte";
    case IdxType::sbyte:
      return "sbyte";
    case IdxType::int16:
      return "int16";
    case IdxType::int32:
      return "int32";
    case IdxType::float32:
      return "float32";
    case IdxType::float64:
      return "float64";
  }
  return "unknown";
}

/// An IDX array as read from disk.
///
/// The elements stay in their stored type, as raw bytes in host byte order, in row-major
/// order of `shape`: Fashion-MNIST's 47 million pixels take 47 MB rather than the 376 MB of
/// a vector of double. `to_vector<T>()` converts them when a typed copy is wanted.
struct IdxArray {
  IdxType type = IdxType::ubyte;  ///< the stored element type
  /// The dimensions, outermost first (for images: count, rows, cols).
  std::vector<std::size_t> shape;
  /// `element_count() * element_size(type)` bytes, already converted to host byte order.
  std::vector<std::byte> data;

  /// The product of the dimensions; 0 for an array without dimensions.
  [[nodiscard]] std::size_t element_count() const noexcept {
    if (shape.empty()) {
      return 0;
    }
    std::size_t count = 1;
    for (const std::size_t extent : shape) {
      count *= extent;
    }
    return count;
  }

  /// The elements converted with `static_cast<T>`; the caller picks a `T` that holds the
  /// stored values (a float64 array read as `int` is undefined for values out of range).
  template <class T>
  requires std::is_arithmetic_v<T>
  [[nodiscard]] std::vector<T> to_vector() const;
};

/// Limits that protect a reader from a malicious or damaged header.
struct IdxReadOptions {
  /// Largest data section accepted, in bytes; the header is checked against it before any
  /// allocation. The default, 4 GiB (half the address space on a 32-bit host), is several
  /// times the largest MNIST-family file.
  std::size_t max_bytes = static_cast<std::size_t>(
      std::min<std::uint64_t>(std::uint64_t{1} << 32, std::numeric_limits<std::size_t>::max() / 2));
};

namespace detail {

/// A zlib file handle: gzread reads gzip streams and, transparently, uncompressed files.
class GzReader {
 public:
  explicit GzReader(const std::filesystem::path& file) : path_(file) {
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) {
      throw DataError("cannot open " + quoted() + ": " +
                      std::make_error_code(std::errc::is_a_directory).message());
    }
    errno = 0;
#ifdef _WIN32
    handle_ = gzopen_w(file.c_str(), "rb");
#else
    handle_ = gzopen(file.c_str(), "rb");
#endif
    if (handle_ == nullptr) {
      const int error = errno;
      throw DataError("cannot open " + quoted() + ": " +
                      (error != 0 ? std::generic_category().message(error) : "out of memory"));
    }
    // zlib's default 8 KiB buffer costs a system call per 8 KiB; 1 MiB makes reading a
    // 26 MB file a few dozen calls.
    gzbuffer(handle_, 1U << 20);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  ~GzReader() {
    gzclose(handle_);
  }

  /// Reads up to `size` bytes; fewer only at the end of the file. Throws on a read error
  /// or a corrupted gzip stream.
  std::size_t read(std::byte* out, std::size_t size) {
    // gzread takes an unsigned int and returns an int.
    constexpr std::size_t max_call = std::size_t{1} << 30;
    std::size_t total = 0;
    while (total < size) {
      const auto want = static_cast<unsigned>(std::min(size - total, max_call));
      const int got = gzread(handle_, out + total, want);
      if (got < 0) {
        throw_stream_error();
      }
      total += static_cast<std::size_t>(got);
      if (static_cast<unsigned>(got) < want) {
        break;
      }
    }
    return total;
  }

  /// Whether the input ended inside a gzip stream (the file was cut short after compression).
  [[nodiscard]] bool gzip_ended_early() const {
    int code = Z_OK;
    gzerror(handle_, &code);
    return code == Z_BUF_ERROR;
  }

  [[nodiscard]] std::string quoted() const {
    return io::quoted(path_);
  }

 private:
  [[noreturn]] void throw_stream_error() const {
    int code = Z_OK;
    const char* message = gzerror(handle_, &code);
    if (code == Z_ERRNO) {
      throw DataError("cannot read " + quoted() + ": " + std::generic_category().message(errno));
    }
    std::string_view reason = message != nullptr ? message : "";
    // zlib prefixes its messages with the path, which ours already names.
    const std::string prefix = path_.string() + ": ";
    if (reason.starts_with(prefix)) {
      reason.remove_prefix(prefix.size());
    }
    throw DataError("gzip stream in " + quoted() + " is corrupted: " +
                    std::string(reason.empty() ? "unknown zlib error" : reason));
  }

  std::filesystem::path path_;
  gzFile handle_ = nullptr;
};

inline std::string hex_bytes(const std::byte* bytes, std::size_t count) {
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    char buffer[4];
    std::snprintf(buffer, sizeof buffer, "%02x", std::to_integer<unsigned>(bytes[i]));
    if (i != 0) {
      out += ' ';
    }
    out += buffer;
  }
  return out;
}

inline bool is_idx_type(std::uint8_t code) noexcept {
  return element_size(static_cast<IdxType>(code)) != 0;
}

/// Reverses the bytes of each `width`-byte element: IDX is big-endian.
inline void swap_each_element(std::vector<std::byte>& data, std::size_t width) {
  for (std::size_t i = 0; i + width <= data.size(); i += width) {
    std::reverse(data.begin() + static_cast<std::ptrdiff_t>(i),
                 data.begin() + static_cast<std::ptrdiff_t>(i + width));
  }
}

template <class Stored, class T>
void convert_elements(const std::vector<std::byte>& bytes, std::vector<T>& out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    Stored value;
    std::memcpy(&value, bytes.data() + i * sizeof(Stored), sizeof(Stored));
    // Sign extension of sbyte elements is intended.
    out[i] = static_cast<T>(value);  // NOLINT(bugprone-signed-char-misuse)
  }
}

}  // namespace detail

template <class T>
requires std::is_arithmetic_v<T> std::vector<T> IdxArray::to_vector()
const {
  const std::size_t count = element_count();
  if (element_size(type) == 0 || data.size() != count * element_size(type)) {
    throw std::invalid_argument("IdxArray: data holds " + std::to_string(data.size()) +
                                " bytes, which does not match its shape and type");
  }
  std::vector<T> out(count);
  switch (type) {
    case IdxType::ubyte:
      detail::convert_elements<std::uint8_t>(data, out);
      break;
    case IdxType::sbyte:
      detail::convert_elements<std::int8_t>(data, out);
      break;
    case IdxType::int16:
      detail::convert_elements<std::int16_t>(data, out);
      break;
    case IdxType::int32:
      detail::convert_elements<std::int32_t>(data, out);
      break;
    case IdxType::float32:
      static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559);
      detail::convert_elements<float>(data, out);
      break;
    case IdxType::float64:
      static_assert(sizeof(double) == 8 && std::numeric_limits<double>::is_iec559);
      detail::convert_elements<double>(data, out);
      break;
  }
  return out;
}

/// Reads an IDX file, gzip-compressed (`.gz`) or not; the content decides, not the name.
///
/// Throws DataError, naming the file, when it cannot be opened or read, when the magic
/// number or the element type is wrong, when there are no dimensions, when the size is
/// beyond `options.max_bytes`, when the data is shorter or longer than the header says, and
/// when the gzip stream is corrupted or cut short. The data buffer grows with what the file
/// actually delivers, so a lying header cannot make it allocate the size it claims.
[[nodiscard]] inline IdxArray read_idx(const std::filesystem::path& file,
                                       const IdxReadOptions& options = {}) {
  static_assert(
      std::endian::native == std::endian::little || std::endian::native == std::endian::big,
      "read_idx supports little- and big-endian hosts only");
  detail::GzReader in(file);
  const std::string name = in.quoted();

  std::byte magic[4];
  const std::size_t magic_read = in.read(magic, sizeof magic);
  if (magic_read == 0) {
    throw DataError(name + " is empty: expected an IDX header");
  }
  if (magic_read < sizeof magic) {
    throw DataError(name + " is truncated: expected a 4-byte IDX header, found " +
                    std::to_string(magic_read) + " bytes");
  }
  if (magic[0] != std::byte{0} || magic[1] != std::byte{0}) {
    throw DataError(name + " is not an IDX file: bad magic bytes " + detail::hex_bytes(magic, 4) +
                    " (expected 00 00 <type> <dimensions>)");
  }
  const auto type_code = std::to_integer<std::uint8_t>(magic[2]);
  if (!detail::is_idx_type(type_code)) {
    throw DataError(name + " has an unknown IDX element type " + detail::hex_bytes(magic + 2, 1) +
                    " (expected 08, 09, 0b, 0c, 0d or 0e)");
  }
  IdxArray array;
  array.type = static_cast<IdxType>(type_code);
  const std::size_t width = element_size(array.type);
  const auto dimensions = std::to_integer<std::size_t>(magic[3]);
  if (dimensions == 0) {
    throw DataError(name + " has zero dimensions: an IDX array needs at least one");
  }

  std::vector<std::byte> header(dimensions * 4);
  const std::size_t header_read = in.read(header.data(), header.size());
  if (header_read < header.size()) {
    throw DataError(name + " is truncated: expected " + std::to_string(dimensions) +
                    " dimension sizes (" + std::to_string(header.size()) + " bytes), found " +
                    std::to_string(header_read) + " bytes");
  }
  array.shape.resize(dimensions);
  bool any_zero = false;
  for (std::size_t d = 0; d < dimensions; ++d) {
    std::size_t extent = 0;
    for (std::size_t b = 0; b < 4; ++b) {
      extent = (extent << 8) | std::to_integer<std::size_t>(header[4 * d + b]);
    }
    array.shape[d] = extent;
    any_zero = any_zero || extent == 0;
  }

  std::string shape_text;
  for (std::size_t d = 0; d < dimensions; ++d) {
    shape_text += (d == 0 ? "" : " x ") + std::to_string(array.shape[d]);
  }
  // An empty extent makes the array empty whatever the others claim.
  std::size_t expected = 0;
  bool overflow = false;
  if (!any_zero) {
    expected = width;
    for (const std::size_t extent : array.shape) {
      overflow = overflow || expected > std::numeric_limits<std::size_t>::max() / extent;
      expected = overflow ? 0 : expected * extent;
    }
  }
  if (overflow) {
    throw DataError(name + ": size overflow: " + shape_text + " elements of " +
                    std::to_string(width) + " bytes do not fit in memory");
  }
  if (expected > options.max_bytes) {
    throw DataError(name + ": " + shape_text + " elements of " + std::to_string(width) +
                    " bytes make " + std::to_string(expected) + " bytes, over the limit of " +
                    std::to_string(options.max_bytes) + " bytes (IdxReadOptions::max_bytes)");
  }

  // Start with at most 64 MiB and double as data arrives: files up to 64 MiB (all of
  // Fashion-MNIST) take one allocation, and a tiny file with a huge header fails as truncated
  // before it costs more.
  constexpr std::size_t first_chunk = std::size_t{64} << 20;
  array.data.resize(std::min(expected, first_chunk));
  std::size_t received = 0;
  while (received < expected) {
    if (received == array.data.size()) {
      array.data.resize(std::min(expected, 2 * array.data.size()));
    }
    const std::size_t want = array.data.size() - received;
    const std::size_t got = in.read(array.data.data() + received, want);
    received += got;
    if (got < want) {
      break;
    }
  }
  if (received < expected) {
    throw DataError(name + " is truncated: expected " + std::to_string(expected) +
                    " bytes of data for " + shape_text + " " + std::string(to_string(array.type)) +
                    " elements, found " + std::to_string(received) +
                    (in.gzip_ended_early() ? " (the gzip stream ends early)" : ""));
  }

  // Reading past the data makes zlib check the gzip trailer (CRC and length) as well.
  std::size_t trailing = 0;
  std::byte scratch[4096];
  while (const std::size_t got = in.read(scratch, sizeof scratch)) {
    trailing += got;
  }
  if (trailing != 0) {
    throw DataError(name + " has " + std::to_string(trailing) + " trailing bytes after the " +
                    std::to_string(expected) + " bytes of data for " + shape_text + " " +
                    std::string(to_string(array.type)) + " elements");
  }
  if (in.gzip_ended_early()) {
    throw DataError(name + " is truncated: the data is complete but the gzip stream ends early");
  }

  if constexpr (std::endian::native == std::endian::little) {
    if (width > 1) {
      detail::swap_each_element(array.data, width);
    }
  }
  return array;
}

}  // namespace asyncopt::io
