// LIBSVM and CSV readers: values read back exactly as written, every error path by its
// message, and LIBSVM's own heart_scale example.
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <catch2/catch.hpp>
#include <zlib.h>

#include <asyncopt/io/csv.hpp>
#include <asyncopt/io/error.hpp>
#include <asyncopt/io/libsvm.hpp>
#include <asyncopt/objective/logistic.hpp>

#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using asyncopt::io::binary_labels;
using asyncopt::io::CsvHeader;
using asyncopt::io::DataError;
using asyncopt::io::read_csv;
using asyncopt::io::read_libsvm;
using Catch::Contains;

namespace {

using asyncopt::test::TempDir;

template <class T>
using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  REQUIRE(out.good());
}

void write_gz(const fs::path& file, const std::string& text) {
  gzFile out = gzopen(file.c_str(), "wb");
  REQUIRE(out != nullptr);
  const int written = gzwrite(out, text.data(), static_cast<unsigned>(text.size()));
  const int closed = gzclose(out);
  REQUIRE(written == static_cast<int>(text.size()));
  REQUIRE(closed == Z_OK);
}

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The shortest text that reads back as `value`.
template <class T>
std::string text_of(T value) {
  std::array<char, 64> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  return {buffer.data(), result.ptr};
}

/// Values over many orders of magnitude, both signs, and some exact zeros.
template <class T>
T random_value(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  std::uniform_int_distribution<int> exponent(-30, 30);
  std::uniform_int_distribution<int> zero(0, 9);
  if (zero(rng) == 0) {
    return T(0);
  }
  return static_cast<T>(std::ldexp(mantissa(rng), exponent(rng)));
}

/// A random sparse data set, its LIBSVM text (with comments, blank lines, tabs and a line
/// without features mixed in) and the dense matrix it stands for.
template <class T>
struct SparseSample {
  std::string text;
  Dense<T> dense;
  Vec<T> labels;
  Eigen::Index nonzeros = 0;
  Eigen::Index largest_index = 0;  ///< the largest 1-based index written
};

template <class T>
SparseSample<T> sparse_sample(std::uint64_t seed, Eigen::Index rows, Eigen::Index cols) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution present(0.3);
  SparseSample<T> sample;
  sample.dense = Dense<T>::Zero(rows, cols);
  sample.labels.resize(rows);
  sample.text = "# a LIBSVM file written by the test\n\n";
  for (Eigen::Index i = 0; i < rows; ++i) {
    sample.labels[i] = random_value<T>(rng);
    sample.text += text_of(sample.labels[i]);
    for (Eigen::Index j = 0; j < cols; ++j) {
      if (i != 2 && present(rng)) {
        const T value = random_value<T>(rng);
        sample.dense(i, j) = value;
        ++sample.nonzeros;
        sample.largest_index = std::max(sample.largest_index, j + 1);
        // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false positive, GCC
        // bug 105329) on "literal" + std::string.
        sample.text += j % 3 == 0 ? '\t' : ' ';
        sample.text += std::to_string(j + 1);
        sample.text += ':';
        sample.text += text_of(value);
      }
    }
    sample.text += i % 4 == 1 ? "  # trailing comment\n" : "\n";
    if (i % 5 == 3) {
      sample.text += "   \n# comment line\n";
    }
  }
  return sample;
}

template <class T>
void check_sparse_sample(const TempDir& dir, std::uint64_t seed, Eigen::Index rows,
                         Eigen::Index cols) {
  const SparseSample<T> sample = sparse_sample<T>(seed, rows, cols);
  write_text(dir / "sample.svm", sample.text);
  write_gz(dir / "sample.svm.gz", sample.text);
  for (const fs::path& file : {dir / "sample.svm", dir / "sample.svm.gz"}) {
    INFO("file " << file.string());
    const auto set = read_libsvm<T>(file);
    REQUIRE(set.data.rows() == rows);
    // The width is the largest index in the file.
    REQUIRE(set.data.cols() == sample.largest_index);
    REQUIRE(Dense<T>(set.data).cols() == sample.largest_index);
    CHECK(set.data.isCompressed());
    CHECK(set.data.nonZeros() == sample.nonzeros);
    CHECK(Dense<T>(set.data) == sample.dense.leftCols(sample.largest_index));
    CHECK(set.labels == sample.labels);
  }
}

}  // namespace

TEST_CASE("read_libsvm reads values back exactly, from raw and gzip-compressed files") {
  TempDir dir;
  check_sparse_sample<double>(dir, 1, 23, 17);
  check_sparse_sample<float>(dir, 2, 23, 17);
  // About 2 MB: lines cross the boundaries of the reader's 256 KiB buffer.
  check_sparse_sample<double>(dir, 3, 5000, 60);
}

TEST_CASE("read_libsvm reads a line longer than its buffer") {
  TempDir dir;
  // One line of 100000 features, about 1.3 MB, between two short ones.
  std::string text = "1 1:1\n-1";
  for (int j = 1; j <= 100000; ++j) {
    text += ' ';
    text += std::to_string(j);
    text += ':';
    text += std::to_string(j % 7);
  }
  text += "\n2 100001:0.5\n";
  write_text(dir / "long.svm", text);
  const auto set = read_libsvm<double>(dir / "long.svm");
  REQUIRE(set.data.rows() == 3);
  REQUIRE(set.data.cols() == 100001);
  CHECK(set.data.nonZeros() == 100002);
  CHECK(set.labels == Vec<double>{{1, -1, 2}});
  Eigen::Index wrong = 0;
  for (Eigen::SparseMatrix<double, Eigen::RowMajor>::InnerIterator it(set.data, 1); it; ++it) {
    wrong += it.value() == static_cast<double>((it.col() + 1) % 7) ? 0 : 1;
  }
  CHECK(wrong == 0);
  CHECK(set.data.coeff(2, 100000) == 0.5);
}

TEST_CASE("read_libsvm accepts the format's variants") {
  TempDir dir;
  SECTION("signs, exponents, Windows line ends, a BOM, qid and a line of just a label") {
    write_text(dir / "a.svm",
               "\xEF\xBB\xBF+1 qid:3 1:0.5 3:-2e-3\r\n"
               "-1\r\n"
               "  0.25\t2:+1.5E2   4:-0 # comment 5:7\r\n"
               "3 1:1e-400 2:-1e-400 4:.5");
    const auto set = read_libsvm<double>(dir / "a.svm");
    Dense<double> expected = Dense<double>::Zero(4, 4);
    expected(0, 0) = 0.5;
    expected(0, 2) = -2e-3;
    expected(2, 1) = 150.0;
    expected(3, 3) = 0.5;
    CHECK(Dense<double>(set.data) == expected);
    CHECK(set.labels == Vec<double>{{1.0, -1.0, 0.25, 3.0}});
    CHECK(set.data.nonZeros() == 7);
    // Explicit zeros stay stored, with their sign; underflow reads as zero of its sign.
    CHECK(std::signbit(set.data.coeff(2, 3)));
    CHECK(set.data.coeff(3, 0) == 0.0);
    CHECK_FALSE(std::signbit(set.data.coeff(3, 0)));
    CHECK(std::signbit(set.data.coeff(3, 1)));
  }
  SECTION("a given number of features widens the matrix") {
    write_text(dir / "b.svm", "1 2:3\n0 1:4\n");
    const auto set = read_libsvm<float>(dir / "b.svm", {.features = 10});
    CHECK(set.data.rows() == 2);
    CHECK(set.data.cols() == 10);
    CHECK(set.data.coeff(0, 1) == 3.0F);
    CHECK(set.data.coeff(1, 0) == 4.0F);
    CHECK(read_libsvm<float>(dir / "b.svm", {.features = 2}).data.cols() == 2);
  }
  SECTION("no feature at all makes a matrix without columns") {
    write_text(dir / "c.svm", "1\n2\n");
    const auto set = read_libsvm(dir / "c.svm");
    CHECK(set.data.rows() == 2);
    CHECK(set.data.cols() == 0);
    CHECK(set.labels == Vec<double>{{1.0, 2.0}});
  }
  SECTION("a value beyond float reads as double") {
    write_text(dir / "d.svm", "1 1:1e39\n");
    CHECK(read_libsvm<double>(dir / "d.svm").data.coeff(0, 0) == 1e39);
  }
}

TEST_CASE("read_libsvm names the file, the line and the fault for each kind of bad input") {
  TempDir dir;
  const fs::path file = dir / "bad.svm";
  const std::string name = "'" + file.string() + "'";
  // Two good lines, a blank line and a comment first, so that the bad line is line 5.
  const std::string head = "1 1:1 2:2\n\n# comment\n-1 3:1\n";
  const auto fails = [&](const std::string& line, const std::string& message) {
    write_text(file, head + line + "\n1 1:1\n");
    INFO("line: " << line);
    REQUIRE_THROWS_AS(read_libsvm<double>(file), DataError);
    REQUIRE_THROWS_WITH(read_libsvm<double>(file), Contains(name + " line 5: " + message));
  };

  SECTION("a label that is not a number") {
    fails("abc 1:2", "bad label: 'abc' is not a number");
    fails("1,2 1:2", "bad label: '1,2' is not a number");
    fails("+-1 1:2", "bad label: '+-1' is not a number");
    fails("0x1 1:2", "bad label: '0x1' is not a number");
    fails("nan 1:2", "bad label: 'nan' is not a finite number");
    fails("-inf 1:2", "bad label: '-inf' is not a finite number");
    fails("1e999 1:2", "bad label: '1e999' is out of range for double");
  }
  SECTION("a line without a label") {
    fails("1:2 3:4", "the line starts with '1:2', not a label");
  }
  SECTION("a missing ':'") {
    fails("1 1:2 3", "missing ':' in '3': expected index:value");
    fails("1 1:2 3 :4", "missing ':' in '3'");
  }
  SECTION("an index that is not a positive integer") {
    fails("1 x:2", "bad feature index 'x' in 'x:2': expected a positive integer");
    fails("1 :2", "bad feature index '' in ':2'");
    fails("1 -1:2", "bad feature index '-1' in '-1:2'");
    fails("1 +1:2", "bad feature index '+1' in '+1:2'");
    fails("1 1.5:2", "bad feature index '1.5' in '1.5:2'");
  }
  SECTION("index 0") {
    fails("1 0:2", "feature index 0 in '0:2': indices start at 1");
  }
  SECTION("indices that do not increase") {
    fails("1 2:1 2:1", "feature index 2 in '2:1' does not follow 2: indices must increase");
    fails("1 3:1 7:1 5:1", "feature index 5 in '5:1' does not follow 7");
  }
  SECTION("an index too large for the matrix") {
    fails("1 2147483648:1",
          "feature index '2147483648' in '2147483648:1' is too large (at most "
          "2147483647)");
    fails("1 99999999999999999999999:1", "feature index '99999999999999999999999' in");
  }
  SECTION("a value that is not a finite number") {
    fails("1 4:abc", "bad value of feature 4: 'abc' is not a number");
    fails("1 4:", "bad value of feature 4: '' is not a number");
    fails("1 4:1:2", "bad value of feature 4: '1:2' is not a number");
    fails("1 4:1e", "bad value of feature 4: '1e' is not a number");
    fails("1 4:inf", "bad value of feature 4: 'inf' is not a finite number");
    fails("1 4:NaN", "bad value of feature 4: 'NaN' is not a finite number");
    fails("1 4:-1e400",
          "bad value of feature 4: '-1e400' is out of range for double (largest "
          "1.7976931348623157e+308)");
  }
  SECTION("a value out of range for float") {
    write_text(file, head + "1 4:1e39\n");
    REQUIRE_THROWS_WITH(read_libsvm<float>(file),
                        Contains(name + " line 5: bad value of feature 4: '1e39' is out of "
                                        "range for float (largest 3.4028235e+38)"));
  }
  SECTION("an index beyond the given number of features") {
    write_text(file, head + "1 2:1 14:2\n");
    REQUIRE_THROWS_WITH(read_libsvm<double>(file, {.features = 13}),
                        Contains(name + " line 5: feature index 14 in '14:2' is beyond the 13 "
                                        "features given (LibsvmReadOptions::features)"));
    CHECK(read_libsvm<double>(file, {.features = 14}).data.cols() == 14);
  }
  SECTION("a long or binary token is cut and escaped in the message") {
    fails("1 1:" + std::string(60, '7') + "x",
          "bad value of feature 1: '" + std::string(40, '7') + "'... is not a number");
    fails(std::string("\x01\xff") + " 1:1", "bad label: '\\x01\\xff' is not a number");
  }
  SECTION("line numbers count Windows line ends, blank lines and a gzip wrapper") {
    write_gz(file, "1 1:1\r\n\r\n\r\n# c\r\n2 2:1\r\n3 2:1 1:1\r\n");
    REQUIRE_THROWS_WITH(read_libsvm<double>(file), Contains(name + " line 6: feature index 1"));
  }
  SECTION("a number of features beyond the matrix's reach is a programming error") {
    write_text(file, head);
    REQUIRE_THROWS_AS(read_libsvm<double>(file, {.features = std::size_t{1} << 31}),
                      std::invalid_argument);
  }
}

TEST_CASE("a line longer than max_line_bytes is refused with the file and line, not buffered") {
  TempDir dir;
  // Four good lines, then a good one of 5002 bytes (the last without a line end).
  const std::string good = "1 1:1\n-1 2:1\n1 1:0.5\n-1 3:2\n";
  write_text(dir / "long.svm", good + "1 1:0." + std::string(4996, '7'));
  write_text(dir / "long.csv", "1,2\n3,4\n5,6\n7,8\n0." + std::string(4998, '9') + ",1\n");
  SECTION("a limit below the long line refuses it, naming the option") {
    REQUIRE_THROWS_AS(read_libsvm<double>(dir / "long.svm", {.max_line_bytes = 4096}), DataError);
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "long.svm", {.max_line_bytes = 4096}),
                        Contains("long.svm' line 5 is longer than 4096 bytes") &&
                            Contains("LibsvmReadOptions::max_line_bytes"));
    REQUIRE_THROWS_WITH(read_csv<double>(dir / "long.csv", {.max_line_bytes = 4096}),
                        Contains("long.csv' line 5 is longer than 4096 bytes") &&
                            Contains("CsvReadOptions::max_line_bytes"));
  }
  SECTION("a limit at the line's length reads it, with or without a line end") {
    CHECK(read_libsvm<double>(dir / "long.svm", {.max_line_bytes = 5002}).data.rows() == 5);
    CHECK(read_csv<double>(dir / "long.csv", {.max_line_bytes = 5002}).data.rows() == 5);
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "long.svm", {.max_line_bytes = 5001}),
                        Contains("line 5 is longer than 5001 bytes"));
    // long.csv's long line ends in '\n': one byte over the limit is refused there too.
    REQUIRE_THROWS_WITH(read_csv<double>(dir / "long.csv", {.max_line_bytes = 5001}),
                        Contains("line 5 is longer than 5001 bytes"));
  }
  SECTION("the line end does not count, a Windows one included") {
    write_text(dir / "crlf.svm", "1 1:1\r\n-1 2:1\r\n1 1:0.5 2:1\r\n");
    CHECK(read_libsvm<double>(dir / "crlf.svm", {.max_line_bytes = 11}).data.rows() == 3);
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "crlf.svm", {.max_line_bytes = 10}),
                        Contains("crlf.svm' line 3 is longer than 10 bytes"));
    write_text(dir / "short.svm", "1\n-1 2:1\n");
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "short.svm", {.max_line_bytes = 4}),
                        Contains("short.svm' line 2 is longer than 4 bytes"));
  }
  SECTION("a gzip file of zeros stops at the limit, not at the end of its content") {
    // 64 MiB of zero bytes: a few hundred kB compressed, one endless line uncompressed.
    write_gz(dir / "zeros.svm.gz", std::string(std::size_t{64} << 20, '\0'));
    REQUIRE(fs::file_size(dir / "zeros.svm.gz") < (std::size_t{1} << 20));
    REQUIRE_THROWS_WITH(read_libsvm<float>(dir / "zeros.svm.gz", {.max_line_bytes = 1 << 20}),
                        Contains("zeros.svm.gz' line 1 is longer than 1048576 bytes"));
  }
  SECTION("a device that never ends is refused at the default limit") {
    if (fs::exists("/dev/zero")) {
      REQUIRE_THROWS_WITH(read_csv<float>("/dev/zero"),
                          Contains("'/dev/zero' line 1 is longer than " +
                                   std::to_string(asyncopt::io::default_max_line_bytes)));
    }
  }
}

TEST_CASE("read_libsvm names the file when there is nothing to read") {
  TempDir dir;
  SECTION("a missing file") {
    const fs::path missing = dir / "missing.svm";
    REQUIRE_THROWS_AS(read_libsvm<double>(missing), DataError);
    REQUIRE_THROWS_WITH(read_libsvm<double>(missing),
                        Contains("cannot open '" + missing.string() + "'") &&
                            Contains("No such file or directory"));
  }
  SECTION("a directory") {
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir.path()),
                        Contains("cannot open") && Contains("Is a directory"));
  }
  SECTION("an empty file") {
    write_text(dir / "empty.svm", "");
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "empty.svm"),
                        Contains("empty.svm' is empty: expected LIBSVM lines"));
    write_gz(dir / "empty.svm.gz", "");
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "empty.svm.gz"),
                        Contains("empty.svm.gz' is empty"));
  }
  SECTION("only blank lines and comments") {
    write_text(dir / "blank.svm", "\n  \n# nothing\n\t\n");
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "blank.svm"),
                        Contains("blank.svm' holds no example: its 4 lines are blank or comments"));
  }
  SECTION("a gzip file cut short") {
    const std::string text = sparse_sample<double>(7, 200, 50).text;
    write_gz(dir / "whole.svm.gz", text);
    const std::string bytes = read_bytes(dir / "whole.svm.gz");
    write_text(dir / "cut.svm.gz", bytes.substr(0, bytes.size() - 20));
    REQUIRE(read_libsvm<double>(dir / "whole.svm.gz").data.rows() == 200);
    REQUIRE_THROWS_AS(read_libsvm<double>(dir / "cut.svm.gz"), DataError);
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "cut.svm.gz"),
                        Contains("cut.svm.gz'") && Contains("truncated"));
  }
  SECTION("a corrupted gzip file") {
    write_gz(dir / "bad.svm.gz", sparse_sample<double>(8, 50, 20).text);
    std::string bytes = read_bytes(dir / "bad.svm.gz");
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x55);
    bytes[bytes.size() / 2 + 1] = static_cast<char>(bytes[bytes.size() / 2 + 1] ^ 0x55);
    write_text(dir / "bad.svm.gz", bytes);
    REQUIRE_THROWS_WITH(read_libsvm<double>(dir / "bad.svm.gz"), Contains("bad.svm.gz'"));
  }
}

TEST_CASE("binary_labels maps two labels to 0 and 1") {
  SECTION("the larger label is positive by default") {
    CHECK(binary_labels(Vec<double>{{1, -1, -1, 1}}) == Vec<double>{{1, 0, 0, 1}});
    CHECK(binary_labels(Vec<float>{{0, 1, 1}}) == Vec<float>{{0, 1, 1}});
    CHECK(binary_labels(Vec<double>{{4, 2, 2}}) == Vec<double>{{1, 0, 0}});
  }
  SECTION("a given positive label") {
    CHECK(binary_labels(Vec<double>{{1, -1, -1, 1}}, -1.0) == Vec<double>{{0, 1, 1, 0}});
    CHECK(binary_labels(Vec<double>{{2, 2}}, 2.0) == Vec<double>{{1, 1}});
    CHECK(binary_labels(Vec<double>{{-0.0, 0.0, 1.0}}, 0.0) == Vec<double>{{1, 1, 0}});
    CHECK(binary_labels(Vec<double>{}).size() == 0);
  }
  SECTION("errors") {
    REQUIRE_THROWS_AS(binary_labels(Vec<double>{{1, 2, 2, 3}}), DataError);
    REQUIRE_THROWS_WITH(binary_labels(Vec<double>{{1, 2, 2, 1, 3.5}}),
                        "binary_labels: more than two distinct labels: 1 (first at row 0), 2 "
                        "(row 1) and 3.5 (row 4)");
    REQUIRE_THROWS_WITH(binary_labels(Vec<double>{{1, -1}}, 0.0),
                        "binary_labels: no label equals the positive label 0; the labels are 1 "
                        "and -1");
    REQUIRE_THROWS_WITH(binary_labels(Vec<double>{{3, 3}}, 1.0),
                        Contains("no label equals the positive label 1; every label is 3"));
    REQUIRE_THROWS_WITH(binary_labels(Vec<double>{{3, 3}}),
                        Contains("every label is 3, so which is positive is ambiguous"));
    REQUIRE_THROWS_WITH(binary_labels(Vec<float>{{1, std::numeric_limits<float>::quiet_NaN()}}),
                        "binary_labels: the label at row 1 is nan; labels must be finite");
  }
}

TEST_CASE("heart_scale from liblinear-tools: 270 examples, 13 features, labels +1 and -1") {
  const fs::path file = "/usr/share/doc/liblinear-tools/examples/heart_scale";
  if (!fs::exists(file)) {
    FAIL("LIBSVM example " << file.string()
                           << " is missing: run scripts/deps.sh, which installs Debian's "
                              "package liblinear-tools");
  }
  const auto set = read_libsvm<double>(file);
  REQUIRE(set.data.rows() == 270);
  REQUIRE(set.data.cols() == 13);
  REQUIRE(set.labels.size() == 270);
  CHECK((set.labels.array() == 1.0).count() == 120);
  CHECK((set.labels.array() == -1.0).count() == 150);

  // The file's text, split with string code and parsed with strtod, independently of the
  // reader.
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  REQUIRE(lines.size() == 270);
  const auto field = [&](std::size_t row, std::size_t position) {
    std::istringstream words(lines[row]);
    std::string word;
    for (std::size_t k = 0; k <= position; ++k) {
      words >> word;
    }
    return word;
  };
  const auto number = [](const std::string& text) { return std::strtod(text.c_str(), nullptr); };
  // "+1 1:0.708333 2:1 3:1 4:-0.320755 ... 10:-0.225806 12:1 13:-1"
  REQUIRE(field(0, 0) == "+1");
  REQUIRE(field(0, 1) == "1:0.708333");
  CHECK(set.data.coeff(0, 0) == number("0.708333"));
  CHECK(set.data.coeff(0, 0) == 0.708333);
  REQUIRE(field(0, 4) == "4:-0.320755");
  CHECK(set.data.coeff(0, 3) == -0.320755);
  REQUIRE(field(0, 11) == "12:1");  // feature 11 is absent from line 1
  CHECK(set.data.coeff(0, 10) == 0.0);
  CHECK(set.data.coeff(0, 11) == 1.0);
  const std::string last = field(269, 1);
  REQUIRE(last.starts_with("1:"));
  CHECK(set.data.coeff(269, 0) == number(last.substr(2)));
  CHECK(set.labels[269] == number(field(269, 0)));

  // Every entry, counted so that a bad reader reports one failure rather than thousands.
  Dense<double> expected = Dense<double>::Zero(270, 13);
  Vec<double> expected_labels(270);
  Eigen::Index tokens = 0;
  for (std::size_t row = 0; row < lines.size(); ++row) {
    std::istringstream words(lines[row]);
    std::string word;
    words >> word;
    expected_labels[static_cast<Eigen::Index>(row)] = number(word);
    while (words >> word) {
      const std::size_t colon = word.find(':');
      REQUIRE(colon != std::string::npos);
      const auto column = std::stol(word.substr(0, colon)) - 1;
      expected(static_cast<Eigen::Index>(row), column) = number(word.substr(colon + 1));
      ++tokens;
    }
  }
  CHECK(set.data.nonZeros() == tokens);
  CHECK((Dense<double>(set.data).array() != expected.array()).count() == 0);
  CHECK(set.labels == expected_labels);

  // The data fits LogisticRegression once the labels are 0 and 1: at w = 0 the loss is log 2.
  using Sparse = Eigen::SparseMatrix<double, Eigen::RowMajor>;
  const asyncopt::objective::LogisticRegression<Sparse> model(set.data, binary_labels(set.labels));
  const std::vector<double> zero(model.dimension(), 0.0);
  CHECK(model.loss(zero) == Approx(std::log(2.0)).epsilon(1e-12));
}

namespace {

/// A random data set as CSV text with a header, the label in column `label`, and the
/// features and labels it stands for.
template <class T>
struct DenseSample {
  std::string text;
  Dense<T> data;
  Vec<T> labels;
};

template <class T>
DenseSample<T> dense_sample(std::uint64_t seed, Eigen::Index rows, Eigen::Index features,
                            Eigen::Index label, bool header) {
  std::mt19937_64 rng(seed);
  DenseSample<T> sample;
  sample.data.resize(rows, features);
  sample.labels.resize(rows);
  if (header) {
    for (Eigen::Index c = 0; c <= features; ++c) {
      sample.text += c == 0 ? "" : ",";
      sample.text +=
          c == label ? std::string("label") : 'x' + std::to_string(c < label ? c : c - 1);
    }
    sample.text += "\n";
  }
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index c = 0; c <= features; ++c) {
      const T value = random_value<T>(rng);
      if (c == label) {
        sample.labels[i] = value;
      } else {
        sample.data(i, c < label ? c : c - 1) = value;
      }
      sample.text += c == 0 ? "" : ",";
      sample.text += text_of(value);
    }
    sample.text += "\n";
  }
  return sample;
}

}  // namespace

TEST_CASE("read_csv reads values back exactly, with the label in any column") {
  TempDir dir;
  for (const Eigen::Index label : {0, 2, 5}) {
    for (const bool header : {true, false}) {
      INFO("label column " << label << (header ? " with" : " without") << " a header");
      const auto sample =
          dense_sample<double>(10 + static_cast<std::uint64_t>(label), 31, 5, label, header);
      write_text(dir / "a.csv", sample.text);
      write_gz(dir / "a.csv.gz", sample.text);
      for (const fs::path& file : {dir / "a.csv", dir / "a.csv.gz"}) {
        const auto set = read_csv<double>(file, {.label_column = label});
        CHECK(set.data == sample.data);
        CHECK(set.labels == sample.labels);
        if (header) {
          CHECK(set.feature_names == std::vector<std::string>{"x0", "x1", "x2", "x3", "x4"});
          CHECK(set.label_name == "label");
        } else {
          CHECK(set.feature_names.empty());
          CHECK(set.label_name.empty());
        }
        // The same column counted from the end.
        CHECK(read_csv<double>(file, {.label_column = label - 6}).labels == sample.labels);
      }
    }
  }
  const auto floats = dense_sample<float>(3, 12, 3, 3, true);
  write_text(dir / "f.csv", floats.text);
  const auto set = read_csv<float>(dir / "f.csv");
  CHECK(set.data == floats.data);
  CHECK(set.labels == floats.labels);
}

TEST_CASE("read_csv accepts quotes, blanks, other separators and Windows files") {
  TempDir dir;
  SECTION("quoted fields, blanks around fields, blank lines, a BOM and CRLF") {
    write_text(dir / "q.csv",
               "\xEF\xBB\xBF\"a \"\"b\"\"\", c ,\"y\"\r\n"
               "\r\n"
               " 1.5 , \"-2\" ,+3\r\n"
               "\t-0.25,1e-3,\"4\"  \r\n");
    const auto set = read_csv<double>(dir / "q.csv");
    CHECK(set.feature_names == std::vector<std::string>{"a \"b\"", "c"});
    CHECK(set.label_name == "y");
    CHECK(set.data == Dense<double>{{1.5, -2.0}, {-0.25, 1e-3}});
    CHECK(set.labels == Vec<double>{{3.0, 4.0}});
  }
  SECTION("semicolons and tabs") {
    write_text(dir / "s.csv", "1;2;3\n4;5;6\n");
    CHECK(read_csv<double>(dir / "s.csv", {.separator = ';'}).data ==
          Dense<double>{{1, 2}, {4, 5}});
    write_text(dir / "t.tsv", "a\tb\n1\t 2\n");
    const auto tabs = read_csv<double>(dir / "t.tsv", {.label_column = 0, .separator = '\t'});
    CHECK(tabs.data == Dense<double>{{2}});
    CHECK(tabs.labels == Vec<double>{{1}});
    CHECK(tabs.label_name == "a");
  }
  SECTION("a header forced or refused") {
    write_text(dir / "n.csv", "0,1,2\n3,4,5\n");
    const auto present = read_csv<double>(dir / "n.csv", {.header = CsvHeader::present});
    CHECK(present.feature_names == std::vector<std::string>{"0", "1"});
    CHECK(present.label_name == "2");
    CHECK(present.data == Dense<double>{{3, 4}});
    CHECK(read_csv<double>(dir / "n.csv").data.rows() == 2);
    CHECK(read_csv<double>(dir / "n.csv", {.header = CsvHeader::absent}).data.rows() == 2);
  }
  SECTION("a single column gives examples without features") {
    write_text(dir / "one.csv", "y\n1\n0\n");
    const auto set = read_csv<double>(dir / "one.csv");
    CHECK(set.data.rows() == 2);
    CHECK(set.data.cols() == 0);
    CHECK(set.labels == Vec<double>{{1, 0}});
  }
}

TEST_CASE("read_csv names the file, the line and the column for each kind of bad input") {
  TempDir dir;
  const fs::path file = dir / "bad.csv";
  const std::string name = "'" + file.string() + "'";
  const auto fails = [&](const std::string& text, const std::string& message,
                         const asyncopt::io::CsvReadOptions& options = {}) {
    write_text(file, text);
    INFO("text: " << text);
    REQUIRE_THROWS_AS(read_csv<double>(file, options), DataError);
    REQUIRE_THROWS_WITH(read_csv<double>(file, options), Contains(name + message));
  };

  SECTION("a field that is not a finite number, named by the header") {
    fails("a,b,c\n1,2,3\n\n4,x,6\n", " line 4: column 2 ('b'): 'x' is not a number");
    fails("a,b,c\n1,2,3\n4,5,NA\n", " line 3: column 3 ('c'): 'NA' is not a number");
    fails("1,2,3\n4,nan,6\n", " line 2: column 2: 'nan' is not a finite number");
    fails("1,2,3\n4,5,1e999\n", " line 2: column 3: '1e999' is out of range for double");
    fails("1,2,3\n4,5,1.2.3\n", " line 2: column 3: '1.2.3' is not a number");
    fails("1,2,3\n4,\"5 \",6\n", " line 2: column 2: '5 ' is not a number");
  }
  SECTION("an empty field") {
    fails("a,b\n1,\n",
          " line 2: column 2 ('b'): the field is empty (missing values are not "
          "supported)");
    fails("1,2\n,2\n", " line 2: column 1: the field is empty");
  }
  SECTION("a line whose number of fields differs from the first's") {
    fails("a,b,c\n1,2,3\n4,5\n", " line 3: 2 columns, but line 1 has 3");
    fails("\n\n1,2\n3,4,5\n", " line 4: 3 columns, but line 3 has 2");
  }
  SECTION("quotes") {
    fails("1,2\n3,\"4\n",
          " line 2: column 2: unterminated quote (a quoted field cannot span "
          "lines)");
    fails("1,2\n\"3\"x,4\n", " line 2: column 1: 'x,4' after the closing quote");
  }
  SECTION("a first line taken for data says how to read it as a header") {
    fails("label,1,2\n0,1,2\n",
          " line 1: column 1: 'label' is not a number; the line was taken "
          "for data because some of its fields are numbers (set "
          "CsvReadOptions::header to CsvHeader::present");
    fails("x,y\n1,2\n", " line 1: column 1: 'x' is not a number", {.header = CsvHeader::absent});
  }
  SECTION("a label column that does not exist") {
    fails("1,2,3\n",
          " line 1: the label column 3 (CsvReadOptions::label_column) does not "
          "exist: the line has 3 columns",
          {.label_column = 3});
    fails("\n1,2,3\n", " line 2: the label column -4", {.label_column = -4});
  }
  SECTION("a float out of range") {
    write_text(file, "1,2\n1e39,1\n");
    REQUIRE_THROWS_WITH(read_csv<float>(file),
                        Contains(name + " line 2: column 1: '1e39' is out of range for float"));
  }
  SECTION("nothing to read") {
    const fs::path missing = dir / "missing.csv";
    REQUIRE_THROWS_WITH(read_csv<double>(missing),
                        Contains("cannot open '" + missing.string() + "'") &&
                            Contains("No such file or directory"));
    write_text(file, "");
    REQUIRE_THROWS_WITH(read_csv<double>(file), Contains(name + " is empty"));
    write_text(file, "\n \n");
    REQUIRE_THROWS_WITH(read_csv<double>(file),
                        Contains(name + " holds no data row: its lines are blank"));
    write_text(file, "a,b\n\n");
    REQUIRE_THROWS_WITH(read_csv<double>(file), Contains(name + " has a header but no data row"));
  }
  SECTION("a separator that cannot separate is a programming error") {
    write_text(file, "1,2\n");
    for (const char separator : {'"', ' ', '\n', '\r'}) {
      REQUIRE_THROWS_AS(read_csv<double>(file, {.separator = separator}), std::invalid_argument);
    }
  }
}
