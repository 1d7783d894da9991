#include "trainer/datasets.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "log.h"

namespace opu::trainer {
namespace fs = std::filesystem;
namespace {

// Reads a whole file through zlib, which passes uncompressed files through unchanged.
Result<std::vector<std::uint8_t>> read_maybe_gzip(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return not_found(path + ": no such file");
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return not_found(path + ": cannot open");
  std::vector<std::uint8_t> bytes;
  std::vector<std::uint8_t> chunk(1 << 20);
  while (true) {
    const int n = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int errnum = 0;
      std::string message = gzerror(file, &errnum);
      gzclose(file);
      return data_loss(path + ": corrupt gzip stream (" + message + ")");
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  // A truncated gzip member reads as a short file without an error from gzread on some zlib
  // versions; gzclose_r reports it.
  const int close_status = gzclose(file);
  if (close_status != Z_OK && close_status != Z_BUF_ERROR) {
    return data_loss(path + ": corrupt gzip stream (gzclose " + std::to_string(close_status) + ")");
  }
  return bytes;
}

std::string shape_string(const std::vector<std::int64_t>& dims) {
  std::string s;
  // Appended piece by piece: `const char* + std::string` makes GCC 12 warn -Wrestrict (a false
  // positive in its inlined string concatenation) in release builds.
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += 'x';
    s += std::to_string(dims[i]);
  }
  return s;
}

}  // namespace

Result<IdxArray> read_idx(const std::string& path) {
  Result<std::vector<std::uint8_t>> bytes = read_maybe_gzip(path);
  if (!bytes.ok()) return bytes.status();
  return parse_idx(*bytes, path);
}

Result<IdxArray> parse_idx(std::span<const std::uint8_t> b, const std::string& path) {
  if (b.size() < 4) {
    return data_loss(path + ": " + std::to_string(b.size()) + " bytes, want an IDX header");
  }
  if (b[0] != 0 || b[1] != 0) {
    return data_loss(path + ": magic starts with " + std::to_string(b[0]) + "," +
                     std::to_string(b[1]) + ", want 0,0 (not an IDX file)");
  }
  if (b[2] != 0x08) {
    return data_loss(path + ": data type 0x" + std::to_string(b[2]) +
                     ", want 0x08 (unsigned byte)");
  }
  const int n_dims = b[3];
  if (n_dims < 1 || n_dims > 4) {
    return data_loss(path + ": " + std::to_string(n_dims) + " dimensions, want 1 to 4");
  }
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(n_dims);
  if (b.size() < header) {
    return data_loss(path + ": truncated header (" + std::to_string(b.size()) + " bytes, want " +
                     std::to_string(header) + ")");
  }
  IdxArray array;
  std::int64_t count = 1;
  bool beyond_int64 = false;  // four 32-bit dimensions can multiply past 64 bits
  for (int d = 0; d < n_dims; ++d) {
    const std::size_t o = 4 + 4 * static_cast<std::size_t>(d);
    const std::int64_t dim = (static_cast<std::int64_t>(b[o]) << 24) |
                             (static_cast<std::int64_t>(b[o + 1]) << 16) |
                             (static_cast<std::int64_t>(b[o + 2]) << 8) | b[o + 3];
    if (dim <= 0) {
      return data_loss(path + ": dimension " + std::to_string(d) + " is " + std::to_string(dim) +
                       ", want > 0");
    }
    array.dims.push_back(dim);
    beyond_int64 = beyond_int64 || count > std::numeric_limits<std::int64_t>::max() / dim;
    if (!beyond_int64) count *= dim;
  }
  const auto have = static_cast<std::int64_t>(b.size() - header);
  if (beyond_int64) {
    return data_loss(path + ": " + std::to_string(have) +
                     " data bytes, want more than 2^63 for shape " + shape_string(array.dims) +
                     " (truncated)");
  }
  if (have != count) {
    return data_loss(path + ": " + std::to_string(have) + " data bytes, want " +
                     std::to_string(count) + " for shape " + shape_string(array.dims) +
                     (have < count ? " (truncated)" : " (trailing bytes)"));
  }
  array.data.assign(b.begin() + static_cast<std::ptrdiff_t>(header), b.end());
  return array;
}

Result<LabelledData> load_idx_pair(const std::string& images_path, const std::string& labels_path,
                                   std::int32_t n_classes) {
  Result<IdxArray> images = read_idx(images_path);
  if (!images.ok()) return images.status();
  Result<IdxArray> labels = read_idx(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->dims.size() < 2) {
    return invalid_argument(images_path + ": shape " + shape_string(images->dims) +
                            ", want N x rows x cols or N x features");
  }
  if (labels->dims.size() != 1) {
    return invalid_argument(labels_path + ": shape " + shape_string(labels->dims) +
                            ", want N (one label per image)");
  }
  const std::int64_t n = images->dims[0];
  if (labels->dims[0] != n) {
    return invalid_argument(labels_path + ": " + std::to_string(labels->dims[0]) +
                            " labels, want " + std::to_string(n) + " (the images in " +
                            images_path + ")");
  }
  const std::int64_t n_features = static_cast<std::int64_t>(images->data.size()) / n;
  LabelledData data;
  data.features.resize(n_features, n);
  // IDX is row-major sample after sample: exactly one sample per column of a column-major matrix.
  const std::uint8_t* src = images->data.data();
  float* dst = data.features.data();
  for (std::size_t i = 0; i < images->data.size(); ++i) {
    dst[i] = static_cast<float>(src[i]) * (1.0F / 255.0F);
  }
  data.labels.resize(static_cast<std::size_t>(n));
  std::int32_t max_label = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t label = labels->data[static_cast<std::size_t>(i)];
    if (n_classes > 0 && label >= n_classes) {
      return invalid_argument(labels_path + ": label[" + std::to_string(i) + "] is " +
                              std::to_string(label) + ", want < " + std::to_string(n_classes) +
                              " (classes of the training set)");
    }
    data.labels[static_cast<std::size_t>(i)] = label;
    max_label = std::max(max_label, label);
  }
  data.n_classes = n_classes > 0 ? n_classes : max_label + 1;
  if (data.n_classes < 2) {
    return invalid_argument(labels_path + ": " + std::to_string(data.n_classes) +
                            " class(es), want >= 2");
  }
  return data;
}

namespace {
std::string find_idx(const std::string& dir, const std::string& name) {
  const fs::path plain = fs::path(dir) / name;
  std::error_code ec;
  if (fs::exists(plain, ec)) return plain.string();
  const fs::path gz = fs::path(dir) / (name + ".gz");
  if (fs::exists(gz, ec)) return gz.string();
  return plain.string() + "[.gz]";
}
}  // namespace

Result<ImageDataset> load_idx_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return not_found(dir + ": no such data directory");
  ImageDataset dataset;
  Result<LabelledData> train = load_idx_pair(find_idx(dir, "train-images-idx3-ubyte"),
                                             find_idx(dir, "train-labels-idx1-ubyte"));
  if (!train.ok()) return train.status();
  dataset.train = std::move(*train);
  const std::string test_images = find_idx(dir, "t10k-images-idx3-ubyte");
  Result<LabelledData> test =
      load_idx_pair(test_images, find_idx(dir, "t10k-labels-idx1-ubyte"), dataset.train.n_classes);
  if (!test.ok()) return test.status();
  dataset.test = std::move(*test);
  if (dataset.test.features.rows() != dataset.train.features.rows()) {
    return invalid_argument(test_images + ": " + std::to_string(dataset.test.features.rows()) +
                            " values per image, want " +
                            std::to_string(dataset.train.features.rows()) +
                            " like the training images");
  }
  return dataset;
}

FeatureStats feature_stats(const LabelledData& split) {
  const Eigen::Index n = split.features.size();
  if (n == 0) return {};
  // Double accumulators: 47 million float pixels summed in float would lose the third digit.
  const double mean = split.features.cast<double>().sum() / static_cast<double>(n);
  const double var =
      (split.features.cast<double>().array() - mean).square().sum() / static_cast<double>(n);
  return {static_cast<float>(mean), static_cast<float>(std::sqrt(var))};
}

void standardize(LabelledData& split, const FeatureStats& stats) {
  OPU_CHECK(stats.std > 0.0F, "standardize: std " + std::to_string(stats.std) + ", want > 0");
  split.features.array() = (split.features.array() - stats.mean) * (1.0F / stats.std);
}

// --- Planetoid
// ------------------------------------------------------------------------------------

Eigen::SparseMatrix<float> normalized_adjacency(
    std::int64_t n_nodes, const std::vector<std::pair<std::int64_t, std::int64_t>>& edges) {
  std::vector<double> degree(static_cast<std::size_t>(n_nodes), 1.0);  // the self-loop
  for (const auto& [u, v] : edges) {
    degree[static_cast<std::size_t>(u)] += 1.0;
    degree[static_cast<std::size_t>(v)] += 1.0;
  }
  std::vector<Eigen::Triplet<float>> triplets;
  triplets.reserve(edges.size() * 2 + static_cast<std::size_t>(n_nodes));
  auto norm = [&](std::int64_t u, std::int64_t v) {
    return static_cast<float>(
        1.0 / std::sqrt(degree[static_cast<std::size_t>(u)] * degree[static_cast<std::size_t>(v)]));
  };
  for (std::int64_t i = 0; i < n_nodes; ++i) {
    triplets.emplace_back(static_cast<int>(i), static_cast<int>(i), norm(i, i));
  }
  for (const auto& [u, v] : edges) {
    triplets.emplace_back(static_cast<int>(u), static_cast<int>(v), norm(u, v));
    triplets.emplace_back(static_cast<int>(v), static_cast<int>(u), norm(u, v));
  }
  Eigen::SparseMatrix<float> a(n_nodes, n_nodes);
  // Duplicate edges are summed, as an adjacency with multiplicities would be.
  a.setFromTriplets(triplets.begin(), triplets.end());
  a.makeCompressed();
  return a;
}

namespace {
// The non-empty lines of a text, without their line ends.
std::vector<std::string> split_lines(std::istream& in) {
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

std::vector<std::string> split_lines(std::string_view text) {
  std::istringstream in{std::string(text)};
  return split_lines(in);
}

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(path + ": no such file");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool parse_int(const std::string& text, std::int64_t& value) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  value = std::strtoll(text.c_str(), &end, 10);
  // The whole text (a NUL inside it would end strtoll early), and no saturation at +-2^63.
  return end == text.c_str() + text.size() && errno != ERANGE;
}
}  // namespace

Result<GraphDataset> load_planetoid(const std::string& dir, const std::string& name) {
  const std::string base = (fs::path(dir) / name).string();
  Result<std::string> content = read_text(base + ".content");
  if (!content.ok()) return content.status();
  Result<std::string> edges = read_text(base + ".edges");
  if (!edges.ok()) return edges.status();
  Result<std::string> split = read_text(base + ".split");
  if (!split.ok()) return split.status();
  return parse_planetoid(*content, *edges, *split, name, base);
}

Result<GraphDataset> parse_planetoid(std::string_view content_text, std::string_view edges_text,
                                     std::string_view split_text, const std::string& name,
                                     const std::string& base) {
  GraphDataset g;
  g.name = name;
  // NAME.content: label<TAB>active feature indices.
  const std::string content_path = base + ".content";
  const std::vector<std::string> content = split_lines(content_text);
  const auto n_nodes = static_cast<std::int64_t>(content.size());
  if (n_nodes == 0) return data_loss(content_path + ": empty, want one line per node");
  std::vector<std::vector<std::int64_t>> active(static_cast<std::size_t>(n_nodes));
  g.nodes.labels.resize(static_cast<std::size_t>(n_nodes));
  std::int64_t n_features = 0;
  std::int32_t max_label = -1;
  for (std::int64_t i = 0; i < n_nodes; ++i) {
    const std::string& line = content[static_cast<std::size_t>(i)];
    const std::size_t tab = line.find('\t');
    std::int64_t label = 0;
    if (tab == std::string::npos || !parse_int(line.substr(0, tab), label) || label < -1 ||
        label > kMaxPlanetoidLabel) {
      return data_loss(content_path + ":" + std::to_string(i + 1) + ": '" + line.substr(0, 40) +
                       "', want label (-1 to " + std::to_string(kMaxPlanetoidLabel) +
                       ") TAB feature indices");
    }
    g.nodes.labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(label);
    max_label = std::max(max_label, static_cast<std::int32_t>(label));
    std::istringstream features(line.substr(tab + 1));
    std::string token;
    while (features >> token) {
      std::int64_t f = 0;
      if (!parse_int(token, f) || f < 0 || f >= kMaxPlanetoidFeatureValues) {
        return data_loss(content_path + ":" + std::to_string(i + 1) + ": feature index '" + token +
                         "', want an integer in [0, " + std::to_string(kMaxPlanetoidFeatureValues) +
                         ")");
      }
      active[static_cast<std::size_t>(i)].push_back(f);
      n_features = std::max(n_features, f + 1);
    }
  }
  if (max_label < 1) {
    return data_loss(content_path + ": " + std::to_string(max_label + 1) + " classes, want >= 2");
  }
  g.nodes.n_classes = max_label + 1;
  if (n_features > kMaxPlanetoidFeatureValues / n_nodes) {
    return invalid_argument(content_path + ": " + std::to_string(n_features) + " features x " +
                            std::to_string(n_nodes) + " nodes, want at most " +
                            std::to_string(kMaxPlanetoidFeatureValues) +
                            " values in the dense feature matrix");
  }
  // Row-normalised features (Kipf & Welling's preprocessing): each node's features sum to 1.
  g.nodes.features = Eigen::MatrixXf::Zero(n_features, n_nodes);
  for (std::int64_t i = 0; i < n_nodes; ++i) {
    const std::vector<std::int64_t>& on = active[static_cast<std::size_t>(i)];
    for (std::int64_t f : on) g.nodes.features(f, i) = 1.0F / static_cast<float>(on.size());
  }
  // NAME.edges: "u v", u < v, no self-loops.
  const std::string edges_path = base + ".edges";
  const std::vector<std::string> edge_lines = split_lines(edges_text);
  std::vector<std::pair<std::int64_t, std::int64_t>> edges;
  edges.reserve(edge_lines.size());
  for (std::size_t k = 0; k < edge_lines.size(); ++k) {
    std::istringstream in(edge_lines[k]);
    std::string su, sv, extra;
    std::int64_t u = 0, v = 0;
    if (!(in >> su >> sv) || (in >> extra) || !parse_int(su, u) || !parse_int(sv, v)) {
      return data_loss(edges_path + ":" + std::to_string(k + 1) + ": '" + edge_lines[k] +
                       "', want two node indices 'u v'");
    }
    if (u < 0 || v < 0 || u >= n_nodes || v >= n_nodes || u == v) {
      return invalid_argument(edges_path + ":" + std::to_string(k + 1) + ": edge " +
                              std::to_string(u) + " " + std::to_string(v) +
                              ", want two distinct nodes in [0, " + std::to_string(n_nodes) +
                              ") (" + content_path + " has " + std::to_string(n_nodes) + " nodes)");
    }
    edges.emplace_back(u, v);
  }
  g.n_edges = static_cast<std::int64_t>(edges.size());
  g.adjacency =
      std::make_shared<const Eigen::SparseMatrix<float>>(normalized_adjacency(n_nodes, edges));
  // NAME.split: one of 0..3 per node.
  const std::string split_path = base + ".split";
  const std::vector<std::string> split = split_lines(split_text);
  if (static_cast<std::int64_t>(split.size()) != n_nodes) {
    return invalid_argument(split_path + ": " + std::to_string(split.size()) +
                            " lines, want one per node (" + std::to_string(n_nodes) + " in " +
                            content_path + ")");
  }
  g.split.resize(static_cast<std::size_t>(n_nodes));
  for (std::int64_t i = 0; i < n_nodes; ++i) {
    std::int64_t s = 0;
    if (!parse_int(split[static_cast<std::size_t>(i)], s) || s < 0 || s > 3) {
      return data_loss(split_path + ":" + std::to_string(i + 1) + ": '" +
                       split[static_cast<std::size_t>(i)] + "', want 0, 1, 2 or 3");
    }
    if (s != 0 && g.nodes.labels[static_cast<std::size_t>(i)] < 0) {
      return invalid_argument(split_path + ":" + std::to_string(i + 1) + ": node " +
                              std::to_string(i) + " is in split " + std::to_string(s) +
                              " but has label -1 in " + content_path + ", want a label");
    }
    g.split[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(s);
  }
  return g;
}

namespace {

// The source tree's data/ folder, compiled in by trainer/CMakeLists.txt.
#ifdef OPU_DATA_DIR
constexpr const char* kSourceDataDir = OPU_DATA_DIR;
#else
constexpr const char* kSourceDataDir = "";
#endif

std::string env_value(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : std::string();
}

}  // namespace

DataSearch data_search_places() {
  DataSearch search;
  search.env_dir = env_value(kDataEnv);
  search.env_name = kDataEnv;
  if (search.env_dir.empty()) {
    search.env_dir = env_value(kDeprecatedDataEnv);
    if (!search.env_dir.empty()) {
      search.env_name = kDeprecatedDataEnv;
      static std::once_flag warned;
      std::call_once(warned, [&] {
        logger()->warn("{} is deprecated: set {} instead (using {} = {})", kDeprecatedDataEnv,
                       kDataEnv, kDeprecatedDataEnv, search.env_dir);
      });
    }
  }
  search.source_dir = kSourceDataDir;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) search.exe_dir = exe.parent_path().string();
  const fs::path cwd = fs::current_path(ec);
  if (!ec) search.cwd = cwd.string();
  return search;
}

Result<std::string> find_data(const std::string& name, const DataSearch& search) {
  const fs::path relative(name);
  if (relative.is_absolute() ||
      std::any_of(relative.begin(), relative.end(), [](const fs::path& p) { return p == ".."; })) {
    return invalid_argument("find_data: name '" + name +
                            "', want a path inside the data folder (no leading '/', no '..')");
  }
  // Every candidate, in search order, with the reason it is searched (for the error message).
  std::vector<std::pair<fs::path, std::string>> candidates;
  auto add = [&](const fs::path& data_dir, const std::string& why) {
    const fs::path path = (name.empty() ? data_dir : data_dir / relative).lexically_normal();
    for (const auto& [seen, reason] : candidates) {
      if (seen == path) return;
    }
    candidates.emplace_back(path, why);
  };
  auto add_with_parents = [&](const std::string& start, const std::string& why) {
    if (start.empty()) return;
    for (fs::path dir = fs::path(start).lexically_normal();; dir = dir.parent_path()) {
      add(dir / "data", why);
      if (dir == dir.parent_path() || dir.empty()) break;
    }
  };
  if (!search.env_dir.empty()) {
    add(search.env_dir, "$" + search.env_name);
  } else {
    if (!search.source_dir.empty()) add(search.source_dir, "the source tree's data folder");
    add_with_parents(search.exe_dir, "the executable's folder and its parents");
    add_with_parents(search.cwd, "the current directory and its parents");
  }
  std::error_code ec;
  for (const auto& [path, why] : candidates) {
    if (fs::exists(path, ec)) return path.string();
  }
  // "data: 'NAME' not found; looked for P1 (why); P2, P3 (why); ...; what to do".
  const std::string what = name.empty() ? std::string("the data sets") : name;
  std::string message = "data: ";
  message.append(name.empty() ? "the data folder" : "'" + name + "'")
      .append(" not found; looked for");
  for (std::size_t k = 0; k < candidates.size(); ++k) {
    const bool new_group = k == 0 || candidates[k].second != candidates[k - 1].second;
    if (k > 0 && new_group) message.append(" (").append(candidates[k - 1].second).append(");");
    message.append(new_group ? " " : ", ").append(candidates[k].first.string());
  }
  if (candidates.empty()) {
    message.append(" nowhere (no place to search)");
  } else {
    message.append(" (").append(candidates.back().second).append(")");
  }
  if (!search.env_dir.empty()) {
    message.append("; $").append(search.env_name).append(" names the only folder searched: point ");
    message.append("it at a folder that holds ")
        .append(what)
        .append(", or unset it to search the ");
    message.append("repository's data/");
  } else {
    message.append("; a clone of the repository has it in data/ (data/README.md), or set ");
    message.append(kDataEnv).append(" to a folder that holds ").append(what);
  }
  return not_found(message);
}

Result<std::string> find_data(const std::string& name) {
  return find_data(name, data_search_places());
}

}  // namespace opu::trainer
