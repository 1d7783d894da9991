// Datasets: IDX image/label files (MNIST, Fashion-MNIST or any image size and class count), the
// Planetoid citation graphs (Cora, CiteSeer) in the format of data/README.md, and find_data():
// where the data sets shipped in the repository's data/ folder are.
//
// Errors are values naming the file, the field, the value found and what was expected.
#pragma once

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "opu_sim/status.h"

namespace opu::trainer {

/// Samples as columns and their integer labels in [0, n_classes).
struct LabelledData {
  Eigen::MatrixXf features;          // n_features x n_samples
  std::vector<std::int32_t> labels;  // n_samples; -1 = unlabelled (graphs only)
  std::int32_t n_classes = 0;
};

/// An IDX file's content: dims and raw bytes (unsigned byte data only, type 0x08).
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

/// Reads an IDX file, gzip-compressed or not (zlib reads both). NOT_FOUND when missing,
/// DATA_LOSS when truncated or malformed.
Result<IdxArray> read_idx(const std::string& path);
/// The IDX content of `bytes` (already decompressed): read_idx() without the file. `source` names
/// it in errors.
Result<IdxArray> parse_idx(std::span<const std::uint8_t> bytes, const std::string& source);

/// Images (N x rows x cols, or N x features) scaled to [0, 1] and labels (N). `n_classes` 0 =
/// max label + 1; otherwise labels at or above it are INVALID_ARGUMENT naming the file and index.
Result<LabelledData> load_idx_pair(const std::string& images_path, const std::string& labels_path,
                                   std::int32_t n_classes = 0);

struct ImageDataset {
  LabelledData train;
  LabelledData test;
};

/// Mean and standard deviation over every feature value of a split (all pixels of all images).
struct FeatureStats {
  float mean = 0.0F;
  float std = 1.0F;
};

/// The statistics of `split`, accumulated in double. A constant split has std 0.
FeatureStats feature_stats(const LabelledData& split);

/// x -> (x - mean) / std on every feature of `split`; `stats.std` must be > 0.
void standardize(LabelledData& split, const FeatureStats& stats);

/// A folder with the four standard names (train-images-idx3-ubyte, train-labels-idx1-ubyte,
/// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), each optionally with `.gz`. The class count
/// comes from the training labels; test images must have the same size and labels in range.
Result<ImageDataset> load_idx_folder(const std::string& dir);

/// Default folder of Debian's dataset-fashion-mnist package.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct GraphDataset {
  std::string name;
  LabelledData nodes;  // features row-normalised (Kipf & Welling), labels -1 when unlabelled
  /// Â = D^-1/2 (A + I) D^-1/2, symmetric, nodes x nodes.
  std::shared_ptr<const Eigen::SparseMatrix<float>> adjacency;
  std::vector<std::uint8_t> split;  // per node: 0 unused, 1 train, 2 validation, 3 test
  std::int64_t n_edges = 0;         // undirected edges read
};

/// Loads DIR/NAME.content, NAME.edges, NAME.split (NAME lower-case: cora, citeseer, ...).
Result<GraphDataset> load_planetoid(const std::string& dir, const std::string& name);
/// load_planetoid() on the three files' contents; `base` (DIR/NAME) names them in errors as
/// BASE.content, BASE.edges and BASE.split.
Result<GraphDataset> parse_planetoid(std::string_view content, std::string_view edges,
                                     std::string_view split, const std::string& name,
                                     const std::string& base);

/// Limits of a Planetoid graph's labels and features. The node features are a dense
/// n_features x n_nodes matrix: one large feature index in a small file must not allocate
/// gigabytes. 2^26 values (256 MiB) is five times CiteSeer's 3703 x 3327 (Cora's is 1433 x 2708).
inline constexpr std::int64_t kMaxPlanetoidLabel = 65535;
inline constexpr std::int64_t kMaxPlanetoidFeatureValues = std::int64_t{1} << 26;

/// The symmetric normalised adjacency with self-loops of an undirected edge list.
Eigen::SparseMatrix<float> normalized_adjacency(
    std::int64_t n_nodes, const std::vector<std::pair<std::int64_t, std::int64_t>>& edges);

// --- The data folder -------------------------------------------------------------------------

/// Names a data folder that replaces every default place (see find_data()).
inline constexpr const char* kDataEnv = "OPU_DATA";
/// Deprecated alias of kDataEnv, read only when kDataEnv is unset; a warning is logged once.
inline constexpr const char* kDeprecatedDataEnv = "OPU_SHARED_DATA";

/// The places find_data() searches. data_search_places() describes this process; tests build
/// their own.
struct DataSearch {
  /// A data folder named by the environment ("" = none) and the variable that named it. When set,
  /// it is the only place searched: an explicit setting is never silently passed over.
  std::string env_dir;
  std::string env_name;
  /// The source tree's data/ folder, compiled into the library (OPU_DATA_DIR); "" = none.
  std::string source_dir;
  /// data/ is looked for in this folder and in each of its parents ("" = skipped): first the
  /// executable's folder (a build tree inside the repository, or data/ copied beside an installed
  /// binary), then the current directory.
  std::string exe_dir;
  std::string cwd;
};

/// This process's places: $OPU_DATA (else the deprecated $OPU_SHARED_DATA), the compiled-in
/// source data folder, the executable's folder (/proc/self/exe) and the current directory.
DataSearch data_search_places();

/// Finds `name` — a data set's folder or file relative to a data folder ("planetoid",
/// "tinyshakespeare/input.txt", "movielens/ratings.csv"), or "" for the data folder itself — in
/// the places of `search`, in order: the environment's folder (alone, when set), the source tree's
/// data/, data/ in the executable's folder and each of its parents, data/ in the current directory
/// and each of its parents. Returns the first path that exists. NOT_FOUND lists every path tried,
/// in order, and how to point at a copy; an absolute name or one with ".." is INVALID_ARGUMENT.
/// Loaders of shipped data sets use this, so a clone of the repository works without a setting.
Result<std::string> find_data(const std::string& name, const DataSearch& search);
/// find_data(name, data_search_places()).
Result<std::string> find_data(const std::string& name = "");

}  // namespace opu::trainer
