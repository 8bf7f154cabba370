// Loader for Fashion-MNIST (and any labelled image set in the MNIST IDX layout).
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>

#include <Eigen/Core>

#include <asyncopt/io/error.hpp>
#include <asyncopt/io/idx.hpp>

namespace asyncopt::io {

/// Images with one label each: row i of `images` is image i flattened row by row
/// (`rows * cols` pixels), scaled from 0..255 to [0, 1] as pixel / 255.
template <class Scalar>
struct LabeledImages {
  /// One image per row, `rows * cols` pixels in [0, 1].
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> images;
  Eigen::VectorXi labels;  ///< labels[i] is the class of image i, as stored (0 to 255)
  std::size_t rows = 0;    ///< height of one image, in pixels
  std::size_t cols = 0;    ///< width of one image, in pixels
};

/// Fashion-MNIST: 60,000 training and 10,000 test images of 28x28 grey pixels, 10 classes.
///
/// H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
/// Machine Learning Algorithms", arXiv:1708.07747, 2017.
template <class Scalar>
struct FashionMnist {
  LabeledImages<Scalar> train;        ///< the training set (60,000 images in the standard files)
  LabeledImages<Scalar> test;         ///< the test set (10,000 images in the standard files)
  static constexpr int classes = 10;  ///< number of classes; every label is in [0, classes)
};

/// Where load_fashion_mnist() looks by default: $ASYNCOPT_FASHION_MNIST_DIR if set and not
/// empty, else where Debian's package `dataset-fashion-mnist` installs the files.
[[nodiscard]] inline std::filesystem::path default_fashion_mnist_dir() {
  // getenv races only with setenv, which the library never calls.
  const char* dir = std::getenv("ASYNCOPT_FASHION_MNIST_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (dir != nullptr && *dir != '\0') {
    return dir;
  }
  return "/usr/share/datasets/fashion-mnist";
}

/// Reads an image file (IDX ubyte, images x rows x cols) and its label file (IDX ubyte,
/// one label per image), gzip-compressed or not.
///
/// Throws DataError, naming both files, when the types or dimensions are not those, or when
/// the two files disagree on the number of images; and whatever read_idx() throws.
template <std::floating_point Scalar>
[[nodiscard]] LabeledImages<Scalar> load_idx_images(const std::filesystem::path& images,
                                                    const std::filesystem::path& labels) {
  const std::string names = quoted(images) + " and " + quoted(labels);
  const IdxArray pixels = read_idx(images);
  if (pixels.type != IdxType::ubyte || pixels.shape.size() != 3) {
    throw DataError(quoted(images) + " (images for " + names +
                    ") must be a 3-D ubyte IDX array (images x rows x cols), found a " +
                    std::to_string(pixels.shape.size()) + "-D " +
                    std::string(to_string(pixels.type)) + " array");
  }
  const IdxArray classes = read_idx(labels);
  if (classes.type != IdxType::ubyte || classes.shape.size() != 1) {
    throw DataError(quoted(labels) + " (labels for " + names +
                    ") must be a 1-D ubyte IDX array, found a " +
                    std::to_string(classes.shape.size()) + "-D " +
                    std::string(to_string(classes.type)) + " array");
  }
  const std::size_t count = pixels.shape[0];
  if (classes.shape[0] != count) {
    throw DataError("image/label count mismatch between " + names + ": " + std::to_string(count) +
                    " images but " + std::to_string(classes.shape[0]) + " labels");
  }
  const std::size_t per_image = pixels.shape[1] * pixels.shape[2];
  // read_idx has checked that count * per_image bytes fit in memory; on a 32-bit host that
  // may still exceed Eigen::Index.
  constexpr auto max_index = static_cast<std::size_t>(std::numeric_limits<Eigen::Index>::max());
  if (count > max_index || per_image > max_index) {
    throw DataError(names + " hold more images than an Eigen matrix can index");
  }

  LabeledImages<Scalar> out;
  out.rows = pixels.shape[1];
  out.cols = pixels.shape[2];
  out.images.resize(static_cast<Eigen::Index>(count), static_cast<Eigen::Index>(per_image));
  // A table of the 256 quotients keeps pixel / 255 exactly rounded without a division per
  // pixel.
  std::array<Scalar, 256> scaled{};
  for (std::size_t v = 0; v < scaled.size(); ++v) {
    scaled[v] = static_cast<Scalar>(v) / static_cast<Scalar>(255);
  }
  Scalar* destination = out.images.data();
  const std::byte* source = pixels.data.data();
  for (std::size_t i = 0; i < pixels.data.size(); ++i) {
    destination[i] = scaled[std::to_integer<std::size_t>(source[i])];
  }
  out.labels.resize(static_cast<Eigen::Index>(count));
  for (std::size_t i = 0; i < count; ++i) {
    out.labels[static_cast<Eigen::Index>(i)] = std::to_integer<int>(classes.data[i]);
  }
  return out;
}

namespace detail {

inline std::filesystem::path require_fashion_file(const std::filesystem::path& dir,
                                                  const char* name) {
  std::filesystem::path file = dir / name;
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    const bool dir_exists = std::filesystem::is_directory(dir, ec);
    throw DataError("Fashion-MNIST file '" + file.string() + "' is missing" +
                    (dir_exists ? "" : " (the directory does not exist)") +
                    ": Debian's package dataset-fashion-mnist provides it in "
                    "/usr/share/datasets/fashion-mnist; or set ASYNCOPT_FASHION_MNIST_DIR to "
                    "a directory holding the four .gz files");
  }
  return file;
}

template <class Scalar>
void check_fashion_labels(const LabeledImages<Scalar>& set, const std::filesystem::path& file) {
  for (Eigen::Index i = 0; i < set.labels.size(); ++i) {
    const int label = set.labels[i];
    if (label >= FashionMnist<Scalar>::classes) {
      throw DataError(quoted(file) + ": label " + std::to_string(label) + " of image " +
                      std::to_string(i) + " is outside 0.." +
                      std::to_string(FashionMnist<Scalar>::classes - 1));
    }
  }
}

}  // namespace detail

/// Loads the training and test sets from `dir`, which holds Fashion-MNIST's four files
/// {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
///
/// Throws DataError when a file is missing (saying which, and which package provides it),
/// malformed, when a label is not below `classes`, or when the two sets' image sizes differ.
template <std::floating_point Scalar>
[[nodiscard]] FashionMnist<Scalar> load_fashion_mnist(
    const std::filesystem::path& dir = default_fashion_mnist_dir()) {
  const auto train_images = detail::require_fashion_file(dir, "train-images-idx3-ubyte.gz");
  const auto train_labels = detail::require_fashion_file(dir, "train-labels-idx1-ubyte.gz");
  const auto test_images = detail::require_fashion_file(dir, "t10k-images-idx3-ubyte.gz");
  const auto test_labels = detail::require_fashion_file(dir, "t10k-labels-idx1-ubyte.gz");
  FashionMnist<Scalar> data;
  data.train = load_idx_images<Scalar>(train_images, train_labels);
  data.test = load_idx_images<Scalar>(test_images, test_labels);
  detail::check_fashion_labels(data.train, train_labels);
  detail::check_fashion_labels(data.test, test_labels);
  if (data.train.rows != data.test.rows || data.train.cols != data.test.cols) {
    throw DataError("Fashion-MNIST in '" + dir.string() + "': training images are " +
                    std::to_string(data.train.rows) + "x" + std::to_string(data.train.cols) +
                    " but test images are " + std::to_string(data.test.rows) + "x" +
                    std::to_string(data.test.cols));
  }
  return data;
}

}  // namespace asyncopt::io
