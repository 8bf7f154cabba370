// IDX reader and Fashion-MNIST loader: values, shapes, byte order, and every error path.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <zlib.h>

#include <asyncopt/io/error.hpp>
#include <asyncopt/io/fashion_mnist.hpp>
#include <asyncopt/io/idx.hpp>

#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using asyncopt::io::DataError;
using asyncopt::io::IdxArray;
using asyncopt::io::IdxType;
using asyncopt::io::read_idx;
using Catch::Contains;
using Bytes = std::vector<unsigned char>;

namespace {

using asyncopt::test::TempDir;

/// Sets an environment variable for the lifetime of the object, then restores it. Tests run
/// on one thread, so the environment functions cannot race here.
// NOLINTBEGIN(concurrency-mt-unsafe)
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    ::setenv(name, value.c_str(), 1);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};
// NOLINTEND(concurrency-mt-unsafe)

void write_raw(const fs::path& file, const Bytes& bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void write_gz(const fs::path& file, const Bytes& bytes) {
  gzFile out = gzopen(file.c_str(), "wb");
  REQUIRE(out != nullptr);
  const int written = gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size()));
  const int closed = gzclose(out);
  REQUIRE(written == static_cast<int>(bytes.size()));
  REQUIRE(closed == Z_OK);
}

Bytes read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void append_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<unsigned char>(v >> shift));
  }
}

Bytes idx_header(unsigned char type, std::initializer_list<std::uint32_t> shape) {
  Bytes out{0, 0, type, static_cast<unsigned char>(shape.size())};
  for (const std::uint32_t extent : shape) {
    append_be32(out, extent);
  }
  return out;
}

/// Big-endian bytes of an arithmetic value, built with shifts so that this encoder does not
/// share the reader's byte-swapping code.
template <class T>
void append_be(Bytes& out, T value) {
  std::uint64_t bits = 0;
  if constexpr (sizeof(T) == 1) {
    std::uint8_t u = 0;
    std::memcpy(&u, &value, 1);
    bits = u;
  } else if constexpr (sizeof(T) == 2) {
    std::uint16_t u = 0;
    std::memcpy(&u, &value, 2);
    bits = u;
  } else if constexpr (sizeof(T) == 4) {
    std::uint32_t u = 0;
    std::memcpy(&u, &value, 4);
    bits = u;
  } else {
    std::memcpy(&bits, &value, 8);
  }
  for (int shift = 8 * static_cast<int>(sizeof(T)) - 8; shift >= 0; shift -= 8) {
    out.push_back(static_cast<unsigned char>(bits >> shift));
  }
}

template <class T>
Bytes idx_file(unsigned char type, std::initializer_list<std::uint32_t> shape,
               const std::vector<T>& values) {
  Bytes out = idx_header(type, shape);
  for (const T v : values) {
    append_be(out, v);
  }
  return out;
}

/// Writes the file raw and gzip-compressed, reads both back and checks shape and values.
template <class T>
void check_round_trip(const TempDir& dir, const std::string& name, IdxType type,
                      std::initializer_list<std::uint32_t> shape, const std::vector<T>& values) {
  const Bytes file = idx_file(static_cast<unsigned char>(type), shape, values);
  write_raw(dir / name, file);
  write_gz(dir / (name + ".gz"), file);
  for (const auto& path : {dir / name, dir / (name + ".gz")}) {
    INFO("file " << path.string());
    const IdxArray array = read_idx(path);
    CHECK(array.type == type);
    CHECK(array.shape == std::vector<std::size_t>(shape.begin(), shape.end()));
    CHECK(array.element_count() == values.size());
    CHECK(array.data.size() == values.size() * sizeof(T));
    CHECK(array.to_vector<T>() == values);
  }
}

}  // namespace

TEST_CASE("read_idx reads every element type from raw and gzip-compressed files") {
  TempDir dir;
  check_round_trip<std::uint8_t>(dir, "ubyte.idx", IdxType::ubyte, {2, 3},
                                 {0, 1, 127, 128, 254, 255});
  check_round_trip<std::int8_t>(dir, "sbyte.idx", IdxType::sbyte, {4}, {-128, -1, 0, 127});
  check_round_trip<std::int16_t>(dir, "int16.idx", IdxType::int16, {1, 3}, {0x0102, -2, -32768});
  check_round_trip<std::int32_t>(dir, "int32.idx", IdxType::int32, {2, 1, 2},
                                 {0x01020304, -123456789, 2147483647, -2});
  check_round_trip<float>(dir, "float32.idx", IdxType::float32, {3}, {1.5F, -0.15625F, 3.0e38F});
  check_round_trip<double>(dir, "float64.idx", IdxType::float64, {2, 2},
                           {0.1, -1234.5678, 1e300, -4.9e-324});
}

TEST_CASE("read_idx decodes big-endian bytes written by hand") {
  TempDir dir;
  SECTION("int32 00 00 01 02 is 258 and ff ff ff fe is -2") {
    write_raw(dir / "a.idx", {0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE});
    CHECK(read_idx(dir / "a.idx").to_vector<std::int32_t>() == std::vector<std::int32_t>{258, -2});
  }
  SECTION("float32 3f c0 00 00 is 1.5") {
    write_raw(dir / "a.idx", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0});
    CHECK(read_idx(dir / "a.idx").to_vector<float>() == std::vector<float>{1.5F});
  }
  SECTION("float64 40 09 21 fb 54 44 2d 18 is pi") {
    write_raw(dir / "a.idx",
              {0, 0, 0x0E, 1, 0, 0, 0, 1, 0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18});
    CHECK(read_idx(dir / "a.idx").to_vector<double>() == std::vector<double>{3.141592653589793});
  }
  SECTION("a dimension of 00 01 00 00 is 65536") {
    Bytes file = idx_header(0x08, {65536});
    file.resize(file.size() + 65536, 7);
    write_gz(dir / "a.idx.gz", file);
    const IdxArray array = read_idx(dir / "a.idx.gz");
    CHECK(array.shape == std::vector<std::size_t>{65536});
    CHECK(array.to_vector<int>() == std::vector<int>(65536, 7));
  }
}

TEST_CASE("read_idx accepts an empty array and converts to another arithmetic type") {
  TempDir dir;
  write_raw(dir / "empty.idx", idx_header(0x0D, {0, 784}));
  const IdxArray empty = read_idx(dir / "empty.idx");
  CHECK(empty.shape == std::vector<std::size_t>{0, 784});
  CHECK(empty.element_count() == 0);
  CHECK(empty.data.empty());

  write_raw(dir / "bytes.idx", idx_file<std::uint8_t>(0x08, {3}, {0, 200, 255}));
  CHECK(read_idx(dir / "bytes.idx").to_vector<float>() == std::vector<float>{0.0F, 200.0F, 255.0F});
}

TEST_CASE("read_idx names the file and the fault for each kind of bad input") {
  TempDir dir;
  const Bytes good = idx_file<std::int32_t>(0x0C, {3}, {1, 2, 3});

  SECTION("a missing file") {
    const fs::path missing = dir / "missing.idx";
    REQUIRE_THROWS_AS(read_idx(missing), DataError);
    REQUIRE_THROWS_WITH(read_idx(missing), Contains("cannot open '" + missing.string() + "'") &&
                                               Contains("No such file or directory"));
  }
  SECTION("a directory") {
    REQUIRE_THROWS_WITH(read_idx(dir.path()),
                        Contains("cannot open") && Contains("Is a directory"));
  }
  SECTION("an empty file") {
    write_raw(dir / "empty.idx", {});
    REQUIRE_THROWS_WITH(read_idx(dir / "empty.idx"), Contains("empty.idx' is empty"));
  }
  SECTION("a header cut short") {
    write_raw(dir / "short.idx", {0, 0});
    REQUIRE_THROWS_WITH(read_idx(dir / "short.idx"), Contains("truncated") && Contains("header"));
  }
  SECTION("bad magic bytes are printed") {
    write_raw(dir / "zip.idx", {0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0});
    REQUIRE_THROWS_AS(read_idx(dir / "zip.idx"), DataError);
    REQUIRE_THROWS_WITH(read_idx(dir / "zip.idx"),
                        Contains("zip.idx") && Contains("bad magic bytes 50 4b 03 04"));
  }
  SECTION("an unknown element type") {
    write_raw(dir / "type.idx", {0, 0, 0x0A, 1, 0, 0, 0, 1, 0});
    REQUIRE_THROWS_WITH(read_idx(dir / "type.idx"),
                        Contains("type.idx") && Contains("unknown IDX element type 0a"));
  }
  SECTION("zero dimensions") {
    write_raw(dir / "zero.idx", {0, 0, 0x08, 0});
    REQUIRE_THROWS_WITH(read_idx(dir / "zero.idx"), Contains("zero dimensions"));
  }
  SECTION("dimension sizes cut short") {
    write_raw(dir / "dims.idx", {0, 0, 0x08, 3, 0, 0, 0, 1, 0, 0});
    REQUIRE_THROWS_WITH(read_idx(dir / "dims.idx"),
                        Contains("truncated") && Contains("expected 3 dimension sizes"));
  }
  SECTION("sizes whose product overflows") {
    write_raw(dir / "overflow.idx", idx_header(0x0E, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}));
    REQUIRE_THROWS_WITH(read_idx(dir / "overflow.idx"), Contains("size overflow"));
  }
  SECTION("a size over the limit, checked before reading any data") {
    write_raw(dir / "huge.idx", idx_header(0x08, {60000, 60000, 60000}));
    REQUIRE_THROWS_WITH(read_idx(dir / "huge.idx"), Contains("over the limit"));
    write_raw(dir / "small.idx", good);
    REQUIRE_THROWS_WITH(read_idx(dir / "small.idx", {.max_bytes = 11}),
                        Contains("12 bytes, over the limit of 11 bytes"));
    CHECK(read_idx(dir / "small.idx", {.max_bytes = 12}).element_count() == 3);
  }
  SECTION("a header that claims 3 GiB in a tiny file fails as truncated") {
    Bytes file = idx_header(0x08, {3, 1024, 1024 * 1024});
    file.resize(file.size() + 100);
    write_gz(dir / "liar.idx.gz", file);
    REQUIRE_THROWS_WITH(read_idx(dir / "liar.idx.gz"),
                        Contains("truncated") && Contains("found 100"));
  }
  SECTION("truncated data in a raw file") {
    write_raw(dir / "cut.idx", Bytes(good.begin(), good.end() - 5));
    REQUIRE_THROWS_AS(read_idx(dir / "cut.idx"), DataError);
    REQUIRE_THROWS_WITH(read_idx(dir / "cut.idx"), Contains("cut.idx' is truncated") &&
                                                       Contains("expected 12 bytes of data") &&
                                                       Contains("found 7"));
  }
  SECTION("truncated data in a gzip file") {
    write_gz(dir / "cut.idx.gz", Bytes(good.begin(), good.end() - 5));
    REQUIRE_THROWS_WITH(read_idx(dir / "cut.idx.gz"), Contains("truncated") && Contains("found 7"));
  }
  SECTION("trailing bytes after the data") {
    Bytes file = good;
    file.push_back(0);
    file.push_back(0);
    write_raw(dir / "long.idx", file);
    write_gz(dir / "long.idx.gz", file);
    REQUIRE_THROWS_WITH(read_idx(dir / "long.idx"), Contains("2 trailing bytes"));
    REQUIRE_THROWS_WITH(read_idx(dir / "long.idx.gz"), Contains("2 trailing bytes"));
  }
  SECTION("a corrupted deflate stream") {
    Bytes file = idx_header(0x08, {4096});
    for (std::size_t i = 0; i < 4096; ++i) {
      file.push_back(static_cast<unsigned char>(i * 7919 % 251));
    }
    write_gz(dir / "bad.idx.gz", file);
    Bytes compressed = read_file(dir / "bad.idx.gz");
    REQUIRE(compressed.size() > 40);
    std::fill(compressed.begin() + 10, compressed.begin() + 30, 0xFF);
    write_raw(dir / "bad.idx.gz", compressed);
    REQUIRE_THROWS_AS(read_idx(dir / "bad.idx.gz"), DataError);
    REQUIRE_THROWS_WITH(read_idx(dir / "bad.idx.gz"),
                        Contains("gzip stream in '") && Contains("is corrupted"));
  }
  SECTION("a wrong CRC in the gzip trailer") {
    write_gz(dir / "crc.idx.gz", good);
    Bytes compressed = read_file(dir / "crc.idx.gz");
    compressed[compressed.size() - 8] ^= 0x01;
    write_raw(dir / "crc.idx.gz", compressed);
    REQUIRE_THROWS_WITH(read_idx(dir / "crc.idx.gz"),
                        Contains("is corrupted: incorrect data check"));
  }
  SECTION("a gzip stream cut after the data but before its trailer") {
    write_gz(dir / "trailer.idx.gz", good);
    Bytes compressed = read_file(dir / "trailer.idx.gz");
    compressed.resize(compressed.size() - 8);
    write_raw(dir / "trailer.idx.gz", compressed);
    REQUIRE_THROWS_WITH(read_idx(dir / "trailer.idx.gz"),
                        Contains("truncated") && Contains("gzip stream ends early"));
  }
  SECTION("a gzip stream cut in the middle") {
    Bytes file = idx_header(0x08, {4096});
    for (std::size_t i = 0; i < 4096; ++i) {
      file.push_back(static_cast<unsigned char>(i * 7919 % 251));
    }
    write_gz(dir / "half.idx.gz", file);
    Bytes compressed = read_file(dir / "half.idx.gz");
    compressed.resize(compressed.size() / 2);
    write_raw(dir / "half.idx.gz", compressed);
    REQUIRE_THROWS_WITH(read_idx(dir / "half.idx.gz"),
                        Contains("truncated") && Contains("gzip stream ends early"));
  }
}

TEST_CASE("load_idx_images scales pixels to [0, 1] and pairs them with their labels") {
  TempDir dir;
  write_gz(dir / "images.gz",
           idx_file<std::uint8_t>(0x08, {3, 2, 2}, {0, 255, 51, 102, 1, 2, 3, 4, 255, 255, 0, 0}));
  write_raw(dir / "labels", idx_file<std::uint8_t>(0x08, {3}, {9, 0, 200}));
  const auto set = asyncopt::io::load_idx_images<double>(dir / "images.gz", dir / "labels");
  CHECK(set.rows == 2);
  CHECK(set.cols == 2);
  REQUIRE(set.images.rows() == 3);
  REQUIRE(set.images.cols() == 4);
  CHECK(set.images(0, 0) == 0.0);
  CHECK(set.images(0, 1) == 1.0);
  CHECK(set.images(0, 2) == 51.0 / 255.0);
  CHECK(set.images(0, 3) == 102.0 / 255.0);
  CHECK(set.images(1, 3) == 4.0 / 255.0);
  CHECK(set.images(2, 1) == 1.0);
  CHECK(set.images(2, 2) == 0.0);
  CHECK(set.labels == Eigen::Vector3i(9, 0, 200));

  const auto single = asyncopt::io::load_idx_images<float>(dir / "images.gz", dir / "labels");
  CHECK(single.images(0, 2) == 51.0F / 255.0F);
}

TEST_CASE("load_idx_images rejects files that do not describe labelled images") {
  TempDir dir;
  const auto images = dir / "images";
  const auto labels = dir / "labels";
  write_raw(images, idx_file<std::uint8_t>(0x08, {2, 1, 2}, {1, 2, 3, 4}));
  write_raw(labels, idx_file<std::uint8_t>(0x08, {2}, {0, 1}));
  using asyncopt::io::load_idx_images;
  const std::string both = "'" + images.string() + "' and '" + labels.string() + "'";

  SECTION("label and image counts differ") {
    write_raw(labels, idx_file<std::uint8_t>(0x08, {3}, {0, 1, 2}));
    REQUIRE_THROWS_AS(load_idx_images<float>(images, labels), DataError);
    REQUIRE_THROWS_WITH(
        load_idx_images<float>(images, labels),
        Contains("count mismatch") && Contains(both) && Contains("2 images but 3 labels"));
  }
  SECTION("images that are not 3-D") {
    write_raw(images, idx_file<std::uint8_t>(0x08, {2, 2}, {1, 2, 3, 4}));
    REQUIRE_THROWS_WITH(load_idx_images<float>(images, labels),
                        Contains("3-D ubyte") && Contains("found a 2-D ubyte") && Contains(both));
  }
  SECTION("images that are not ubyte") {
    write_raw(images, idx_file<std::int16_t>(0x0B, {2, 1, 2}, {1, 2, 3, 4}));
    REQUIRE_THROWS_WITH(load_idx_images<float>(images, labels), Contains("found a 3-D int16"));
  }
  SECTION("labels that are not 1-D ubyte") {
    write_raw(labels, idx_file<std::int32_t>(0x0C, {2}, {0, 1}));
    REQUIRE_THROWS_WITH(load_idx_images<float>(images, labels),
                        Contains("1-D ubyte") && Contains("found a 1-D int32") && Contains(both));
  }
  SECTION("a missing label file") {
    REQUIRE_THROWS_WITH(load_idx_images<float>(images, dir / "nothing"),
                        Contains("cannot open '" + (dir / "nothing").string() + "'"));
  }
}

TEST_CASE("load_fashion_mnist says which file is missing and which package provides it") {
  TempDir dir;
  SECTION("a directory that does not exist") {
    const auto nowhere = dir / "nowhere";
    REQUIRE_THROWS_AS(asyncopt::io::load_fashion_mnist<float>(nowhere), DataError);
    REQUIRE_THROWS_WITH(asyncopt::io::load_fashion_mnist<float>(nowhere),
                        Contains((nowhere / "train-images-idx3-ubyte.gz").string()) &&
                            Contains("does not exist") && Contains("dataset-fashion-mnist"));
  }
  SECTION("one missing file among the four") {
    const Bytes images = idx_file<std::uint8_t>(0x08, {1, 1, 1}, {0});
    const Bytes labels = idx_file<std::uint8_t>(0x08, {1}, {0});
    write_gz(dir / "train-images-idx3-ubyte.gz", images);
    write_gz(dir / "train-labels-idx1-ubyte.gz", labels);
    write_gz(dir / "t10k-images-idx3-ubyte.gz", images);
    REQUIRE_THROWS_WITH(
        asyncopt::io::load_fashion_mnist<float>(dir.path()),
        Contains("t10k-labels-idx1-ubyte.gz' is missing") && Contains("dataset-fashion-mnist"));
  }
}

TEST_CASE("load_fashion_mnist reads the directory named by ASYNCOPT_FASHION_MNIST_DIR") {
  TempDir dir;
  write_gz(dir / "train-images-idx3-ubyte.gz",
           idx_file<std::uint8_t>(0x08, {2, 1, 3}, {0, 255, 3, 4, 5, 6}));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_file<std::uint8_t>(0x08, {2}, {9, 4}));
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_file<std::uint8_t>(0x08, {1, 1, 3}, {1, 2, 3}));
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_file<std::uint8_t>(0x08, {1}, {7}));
  {
    ScopedEnv env("ASYNCOPT_FASHION_MNIST_DIR", dir.path().string());
    CHECK(asyncopt::io::default_fashion_mnist_dir() == dir.path());
    const auto data = asyncopt::io::load_fashion_mnist<double>();
    CHECK(data.train.images.rows() == 2);
    CHECK(data.train.images.cols() == 3);
    CHECK(data.train.images(0, 1) == 1.0);
    CHECK(data.train.labels == Eigen::Vector2i(9, 4));
    CHECK(data.test.labels == Eigen::VectorXi::Constant(1, 7));
  }
  SECTION("a label outside 0..9 is rejected") {
    write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_file<std::uint8_t>(0x08, {1}, {10}));
    REQUIRE_THROWS_WITH(
        asyncopt::io::load_fashion_mnist<double>(dir.path()),
        Contains("t10k-labels-idx1-ubyte.gz': label 10 of image 0 is outside 0..9"));
  }
  SECTION("training and test images of different sizes are rejected") {
    write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_file<std::uint8_t>(0x08, {1, 3, 1}, {1, 2, 3}));
    REQUIRE_THROWS_WITH(asyncopt::io::load_fashion_mnist<double>(dir.path()),
                        Contains("training images are 1x3 but test images are 3x1"));
  }
}

TEST_CASE("Fashion-MNIST from dataset-fashion-mnist has 60000 + 10000 balanced 28x28 images") {
  const fs::path dir = asyncopt::io::default_fashion_mnist_dir();
  const fs::path train_labels = dir / "train-labels-idx1-ubyte.gz";
  const fs::path train_images = dir / "train-images-idx3-ubyte.gz";
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    if (!fs::exists(dir / name)) {
      FAIL("Fashion-MNIST file " << (dir / name).string()
                                 << " is missing: run scripts/deps.sh, which installs Debian's "
                                    "package dataset-fashion-mnist");
    }
  }

  const auto data = asyncopt::io::load_fashion_mnist<float>();
  REQUIRE(data.train.images.rows() == 60000);
  REQUIRE(data.train.images.cols() == 784);
  REQUIRE(data.test.images.rows() == 10000);
  REQUIRE(data.test.images.cols() == 784);
  CHECK(data.train.rows == 28);
  CHECK(data.train.cols == 28);
  REQUIRE(data.train.labels.size() == 60000);
  REQUIRE(data.test.labels.size() == 10000);

  // Counted rather than asserted label by label, so that a bad file reports one failure,
  // not thousands.
  std::array<int, 10> train_per_class{};
  std::array<int, 10> test_per_class{};
  int out_of_range = 0;
  for (const auto& [labels, per_class] : {std::pair{&data.train.labels, &train_per_class},
                                          std::pair{&data.test.labels, &test_per_class}}) {
    for (const int label : *labels) {
      if (label < 0 || label >= 10) {
        ++out_of_range;
      } else {
        ++(*per_class)[static_cast<std::size_t>(label)];
      }
    }
  }
  CHECK(out_of_range == 0);
  CHECK(train_per_class ==
        std::array<int, 10>{6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000});
  CHECK(test_per_class ==
        std::array<int, 10>{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000});
  CHECK(data.train.images.minCoeff() == 0.0F);
  CHECK(data.train.images.maxCoeff() == 1.0F);
  CHECK(data.test.images.minCoeff() >= 0.0F);
  CHECK(data.test.images.maxCoeff() <= 1.0F);

  // Independent check: the first label and first image straight from the files with zlib.
  std::array<unsigned char, 9> label_head{};
  gzFile labels = gzopen(train_labels.c_str(), "rb");
  REQUIRE(labels != nullptr);
  const int label_bytes = gzread(labels, label_head.data(), label_head.size());
  gzclose(labels);
  REQUIRE(label_bytes == 9);
  CHECK(data.train.labels[0] == static_cast<int>(label_head[8]));

  std::array<unsigned char, 16 + 784> image_head{};
  gzFile images = gzopen(train_images.c_str(), "rb");
  REQUIRE(images != nullptr);
  const int image_bytes = gzread(images, image_head.data(), image_head.size());
  gzclose(images);
  REQUIRE(image_bytes == static_cast<int>(image_head.size()));
  for (std::size_t p = 0; p < 784; ++p) {
    INFO("pixel " << p);
    CHECK(data.train.images(0, static_cast<Eigen::Index>(p)) ==
          static_cast<float>(image_head[16 + p]) / 255.0F);
  }
}
