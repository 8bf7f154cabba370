// Checkpoint files: a checksummed byte payload written atomically (temporary file, fsync,
// rename, fsync of the directory), so that a crash at any moment leaves either the old
// checkpoint or the new one, never a torn file. The format of every store that checkpoints
// (the ZeroMQ servers, the MPI transport); POSIX file calls and the standard library only.
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <system_error>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace asyncopt {

/// A checkpoint file that cannot be used: missing fields, a bad checksum, another format
/// or a model of another shape. The file is left as it is.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Builds a checkpoint's payload from fixed-size fields and arrays.
class CheckpointWriter {
 public:
  /// Appends one trivially copyable value.
  template <class T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>, "asyncopt: checkpoint fields are plain values");
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }

  /// Appends the elements of `values`.
  template <class T>
  void put(std::span<const T> values) {
    const auto* p = reinterpret_cast<const std::byte*>(values.data());
    bytes_.insert(bytes_.end(), p, p + values.size_bytes());
  }

  /// The payload so far.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

/// Reads a payload's fields back in the order they were written, refusing to read past its
/// end.
class CheckpointReader {
 public:
  /// Reads `payload`, whose source is named `file` in errors.
  CheckpointReader(std::vector<std::byte> payload, std::string file)
      : bytes_(std::move(payload)), file_(std::move(file)) {}

  /// Reads one value.
  template <class T>
  [[nodiscard]] T get() {
    T value;
    std::memcpy(&value, take(sizeof(T)), sizeof(T));
    return value;
  }

  /// Reads values.size() elements into `values`.
  template <class T>
  void get(std::span<T> values) {
    const std::byte* source = take(values.size_bytes());
    if (!values.empty()) {  // an empty span may have no storage at all
      std::memcpy(values.data(), source, values.size_bytes());
    }
  }

  /// Throws CheckpointError when bytes are left over (a file of another shape).
  void finish() const {
    if (at_ != bytes_.size()) {
      throw CheckpointError("asyncopt: checkpoint " + file_ + " has " +
                            std::to_string(bytes_.size() - at_) + " bytes more than expected");
    }
  }

  /// Throws CheckpointError saying that `field` is `found` in the file but `expected` in
  /// `here` (such as "this server").
  void expect(const char* field, std::uint64_t found, std::uint64_t expected,
              const char* here) const {
    if (found != expected) {
      throw CheckpointError("asyncopt: checkpoint " + file_ + " has " + field + " " +
                            std::to_string(found) + " but " + here + " has " +
                            std::to_string(expected));
    }
  }

 private:
  const std::byte* take(std::size_t size) {
    if (size > bytes_.size() - at_) {
      throw CheckpointError("asyncopt: checkpoint " + file_ + " is truncated");
    }
    const std::byte* p = bytes_.data() + at_;
    at_ += size;
    return p;
  }

  std::vector<std::byte> bytes_;
  std::string file_;
  std::size_t at_ = 0;
};

namespace detail {

inline constexpr char checkpoint_magic[8] = {'A', 'O', 'P', 'T', 'C', 'K', 'P', 'T'};
inline constexpr std::uint32_t checkpoint_format = 1;
inline constexpr std::size_t checkpoint_header = 8 + 4 + 4 + 8;

// The CRC-32 of IEEE 802.3 (zlib's crc32, polynomial 0xEDB88320 reflected), a byte at a time
// from a table: a checkpoint is written every many rounds, so this is never a hot path.
inline constexpr std::array<std::uint32_t, 256> crc_table = [] {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t byte = 0; byte < 256; ++byte) {
    std::uint32_t c = byte;
    for (int bit = 0; bit < 8; ++bit) {
      c = (c & 1U) != 0 ? 0xEDB88320U ^ (c >> 1U) : c >> 1U;
    }
    table[byte] = c;
  }
  return table;
}();

inline std::uint32_t crc(std::span<const std::byte> bytes) noexcept {
  std::uint32_t c = 0xFFFFFFFFU;
  for (const std::byte b : bytes) {
    c = crc_table[(c ^ static_cast<std::uint32_t>(b)) & 0xFFU] ^ (c >> 8U);
  }
  return c ^ 0xFFFFFFFFU;
}

[[noreturn]] inline void io_error(const std::string& what, const std::filesystem::path& path) {
  throw std::system_error(errno, std::generic_category(),
                          "asyncopt: " + what + " " + path.string());
}

inline void write_all(int fd, const std::byte* data, std::size_t size,
                      const std::filesystem::path& path) {
  while (size > 0) {
    const ::ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      io_error("cannot write checkpoint", path);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

// The bytes of the regular file at `path`; std::system_error naming it otherwise (a
// directory reads as EISDIR).
inline std::vector<char> read_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    io_error("cannot open checkpoint", path);
  }
  std::vector<char> raw;
  struct ::stat info {};
  const bool stated = ::fstat(fd, &info) == 0;
  if (!stated || !S_ISREG(info.st_mode)) {
    const int error = !stated ? errno : (S_ISDIR(info.st_mode) ? EISDIR : EINVAL);
    ::close(fd);
    errno = error;
    io_error("cannot read checkpoint", path);
  }
  raw.resize(static_cast<std::size_t>(info.st_size));
  std::size_t got = 0;
  while (got < raw.size()) {
    const ::ssize_t n = ::read(fd, raw.data() + got, raw.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const int error = n < 0 ? errno : EIO;  // shorter than fstat said: changed under us
      ::close(fd);
      errno = error;
      io_error("cannot read checkpoint", path);
    }
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return raw;
}

}  // namespace detail

/// Writes `payload` to `path` atomically: into `path` + ".tmp", fsync, rename over `path`,
/// fsync of the directory. Throws std::system_error naming the file when any step fails;
/// the previous checkpoint at `path` is then untouched.
inline void write_checkpoint(const std::filesystem::path& path,
                             std::span<const std::byte> payload) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    detail::io_error("cannot create checkpoint", tmp);
  }
  try {
    std::byte header[detail::checkpoint_header];
    std::memcpy(header, detail::checkpoint_magic, 8);
    const std::uint32_t format = detail::checkpoint_format;
    const std::uint32_t sum = detail::crc(payload);
    const std::uint64_t size = payload.size();
    std::memcpy(header + 8, &format, 4);
    std::memcpy(header + 12, &sum, 4);
    std::memcpy(header + 16, &size, 8);
    detail::write_all(fd, header, sizeof(header), tmp);
    detail::write_all(fd, payload.data(), payload.size(), tmp);
    if (::fsync(fd) != 0) {
      detail::io_error("cannot fsync checkpoint", tmp);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) {
    detail::io_error("cannot close checkpoint", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    detail::io_error("cannot rename checkpoint onto", path);
  }
  const std::filesystem::path dir =
      path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

/// Reads the checkpoint at `path` and checks its magic, format and checksum. Throws
/// CheckpointError when the file is not a usable checkpoint and std::system_error when it
/// cannot be read.
[[nodiscard]] inline CheckpointReader read_checkpoint(const std::filesystem::path& path) {
  const std::vector<char> raw = detail::read_file(path);
  const std::string name = path.string();
  if (raw.size() < detail::checkpoint_header ||
      std::memcmp(raw.data(), detail::checkpoint_magic, 8) != 0) {
    throw CheckpointError("asyncopt: " + name + " is not an asyncopt checkpoint");
  }
  std::uint32_t format = 0;
  std::uint32_t sum = 0;
  std::uint64_t size = 0;
  std::memcpy(&format, raw.data() + 8, 4);
  std::memcpy(&sum, raw.data() + 12, 4);
  std::memcpy(&size, raw.data() + 16, 8);
  if (format != detail::checkpoint_format) {
    throw CheckpointError("asyncopt: checkpoint " + name + " has format " + std::to_string(format) +
                          ", this build reads " + std::to_string(detail::checkpoint_format));
  }
  if (size != raw.size() - detail::checkpoint_header) {
    throw CheckpointError("asyncopt: checkpoint " + name + " is truncated or has trailing bytes");
  }
  std::vector<std::byte> payload(size);
  std::memcpy(payload.data(), raw.data() + detail::checkpoint_header, size);
  if (detail::crc(payload) != sum) {
    throw CheckpointError("asyncopt: checkpoint " + name + " fails its checksum (corrupt file)");
  }
  return {std::move(payload), name};
}

}  // namespace asyncopt
