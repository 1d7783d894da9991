// IDX and Planetoid loading, and every bad-input path naming the file, value and expectation.
#include "trainer/datasets.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "test_support.h"
#include "trainer_test_support.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer;
  using opu::Result;
  using opu::StatusCode;

  namespace {
  bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  }
  }  // namespace

  TEST_CASE("IDX: a folder of any image size and class count, gzip or not") {
    for (const bool gzip : {false, true}) {
      test::TempDir dir(gzip ? "idx_gz" : "idx_raw");
      const LabelledData train = test::make_blobs(30, 12, 3, 1);
      const LabelledData test_data = test::make_blobs(9, 12, 3, 2);
      test::write_idx_folder(dir.str(), train, test_data, 3, 4, gzip);
      Result<ImageDataset> loaded = load_idx_folder(dir.str());
      REQUIRE(loaded.ok());
      CHECK(loaded->train.features.rows() == 12);
      CHECK(loaded->train.features.cols() == 30);
      CHECK(loaded->train.n_classes == 3);
      CHECK(loaded->test.features.cols() == 9);
      CHECK(loaded->train.labels == train.labels);
      // Pixels are bytes / 255: within half a quantisation step of the written values.
      CHECK((loaded->train.features - train.features).cwiseAbs().maxCoeff() <=
            0.5F / 255.0F + 1e-6F);
    }
  }

  TEST_CASE("IDX: missing, truncated, corrupt, out-of-range and mismatched files") {
    test::TempDir dir("idx_bad");
    const LabelledData train = test::make_blobs(20, 6, 4, 1);
    const LabelledData test_data = test::make_blobs(8, 6, 4, 2);
    SUBCASE("missing folder") {
      Result<ImageDataset> r = load_idx_folder(dir / "nope");
      CHECK(r.status().code() == StatusCode::kNotFound);
      CHECK(contains(r.status().message(), "nope"));
    }
    SUBCASE("missing file") {
      test::write_idx_folder(dir.str(), train, test_data, 2, 3, false);
      std::filesystem::remove(dir / "t10k-labels-idx1-ubyte");
      Result<ImageDataset> r = load_idx_folder(dir.str());
      CHECK(r.status().code() == StatusCode::kNotFound);
      CHECK(contains(r.status().message(), "t10k-labels-idx1-ubyte"));
    }
    SUBCASE("truncated data") {
      test::write_idx(dir / "img", {10, 2, 3}, std::vector<std::uint8_t>(59), false);
      Result<IdxArray> r = read_idx(dir / "img");
      CHECK(r.status().code() == StatusCode::kDataLoss);
      CHECK(contains(r.status().message(), "59 data bytes, want 60"));
      CHECK(contains(r.status().message(), "truncated"));
    }
    SUBCASE("not an IDX file") {
      std::ofstream(dir / "junk") << "hello world, this is not IDX";
      Result<IdxArray> r = read_idx(dir / "junk");
      CHECK(r.status().code() == StatusCode::kDataLoss);
      CHECK(contains(r.status().message(), "junk"));
    }
    SUBCASE("corrupt gzip stream") {
      test::write_idx(dir / "img.gz", {100, 2, 3}, std::vector<std::uint8_t>(600, 7), true);
      std::fstream f(dir / "img.gz", std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(12);
      f.write("\xff\xff\xff\xff\xff\xff", 6);
      f.close();
      Result<IdxArray> r = read_idx(dir / "img.gz");
      CHECK(r.status().code() == StatusCode::kDataLoss);
      CHECK(contains(r.status().message(), "img.gz"));
    }
    SUBCASE("test label out of the training range") {
      LabelledData bad_test = test_data;
      bad_test.labels[5] = 7;
      test::write_idx_folder(dir.str(), train, bad_test, 2, 3, false);
      Result<ImageDataset> r = load_idx_folder(dir.str());
      CHECK(r.status().code() == StatusCode::kInvalidArgument);
      CHECK(contains(r.status().message(), "label[5] is 7, want < 4"));
      CHECK(contains(r.status().message(), "t10k-labels"));
    }
    SUBCASE("label count differs from image count") {
      test::write_idx_folder(dir.str(), train, test_data, 2, 3, false);
      test::write_idx(dir / "train-labels-idx1-ubyte", {19}, std::vector<std::uint8_t>(19, 1),
                      false);
      Result<ImageDataset> r = load_idx_folder(dir.str());
      CHECK(r.status().code() == StatusCode::kInvalidArgument);
      CHECK(contains(r.status().message(), "19 labels, want 20"));
    }
    SUBCASE("test images of another size") {
      test::write_idx_folder(dir.str(), train, test_data, 2, 3, false);
      test::write_idx(dir / "t10k-images-idx3-ubyte", {8, 2, 2}, std::vector<std::uint8_t>(32),
                      false);
      Result<ImageDataset> r = load_idx_folder(dir.str());
      CHECK(r.status().code() == StatusCode::kInvalidArgument);
      CHECK(contains(r.status().message(), "4 values per image, want 6"));
    }
  }

  TEST_CASE("IDX: standardising with a split's statistics gives mean 0 and std 1") {
    LabelledData split;
    split.features.resize(2, 2);
    split.features << 0.0F, 1.0F, 2.0F, 3.0F;
    const FeatureStats stats = feature_stats(split);
    CHECK(stats.mean == doctest::Approx(1.5));
    CHECK(stats.std == doctest::Approx(std::sqrt(1.25)));  // population std, as torchvision's
    standardize(split, stats);
    const FeatureStats after = feature_stats(split);
    CHECK(after.mean == doctest::Approx(0.0).epsilon(1e-6));
    CHECK(after.std == doctest::Approx(1.0));
    // A constant split has no spread to divide by.
    split.features.setConstant(0.5F);
    CHECK(feature_stats(split).std == 0.0F);
  }

  TEST_CASE("Planetoid: normalised adjacency with self-loops") {
    // Path 0-1-2: degrees with self-loops 2, 3, 2.
    const Eigen::SparseMatrix<float> a = normalized_adjacency(3, {{0, 1}, {1, 2}});
    const Eigen::MatrixXf dense = a;
    CHECK(dense(0, 0) == doctest::Approx(0.5));
    CHECK(dense(1, 1) == doctest::Approx(1.0 / 3.0));
    CHECK(dense(0, 1) == doctest::Approx(1.0 / std::sqrt(6.0)));
    CHECK(dense(1, 0) == dense(0, 1));
    CHECK(dense(0, 2) == 0.0F);
  }

  TEST_CASE("Planetoid: a small graph and its bad inputs") {
    test::TempDir dir("planetoid");
    auto write = [&](const std::string& content, const std::string& edges,
                     const std::string& split) {
      std::ofstream(dir / "g.content") << content;
      std::ofstream(dir / "g.edges") << edges;
      std::ofstream(dir / "g.split") << split;
    };
    SUBCASE("good") {
      write("0\t0 2\n1\t1\n-1\t\n1\t0 1 2\n", "0 1\n1 2\n2 3\n", "1\n1\n0\n3\n");
      Result<GraphDataset> g = load_planetoid(dir.str(), "g");
      REQUIRE(g.ok());
      CHECK(g->nodes.n_classes == 2);
      CHECK(g->nodes.features.rows() == 3);
      CHECK(g->nodes.features(0, 0) == doctest::Approx(0.5));  // row-normalised
      CHECK(g->nodes.features.col(2).isZero());
      CHECK(g->n_edges == 3);
      CHECK(g->adjacency->nonZeros() == 4 + 6);
    }
    SUBCASE("edge out of range") {
      write("0\t0\n1\t1\n", "0 5\n", "1\n1\n");
      Result<GraphDataset> g = load_planetoid(dir.str(), "g");
      CHECK(g.status().code() == StatusCode::kInvalidArgument);
      CHECK(contains(g.status().message(), "g.edges:1: edge 0 5"));
    }
    SUBCASE("split of the wrong length") {
      write("0\t0\n1\t1\n", "0 1\n", "1\n");
      Result<GraphDataset> g = load_planetoid(dir.str(), "g");
      CHECK(g.status().code() == StatusCode::kInvalidArgument);
      CHECK(contains(g.status().message(), "1 lines, want one per node (2"));
    }
    SUBCASE("labelled split node without a label") {
      write("0\t0\n-1\t1\n1\t0\n", "0 1\n", "1\n3\n1\n");
      Result<GraphDataset> g = load_planetoid(dir.str(), "g");
      CHECK(g.status().code() == StatusCode::kInvalidArgument);
      CHECK(contains(g.status().message(), "node 1 is in split 3 but has label -1"));
    }
    SUBCASE("malformed content") {
      write("zero\t0\n", "", "1\n");
      Result<GraphDataset> g = load_planetoid(dir.str(), "g");
      CHECK(g.status().code() == StatusCode::kDataLoss);
      CHECK(contains(g.status().message(), "g.content:1"));
    }
    SUBCASE("missing") {
      CHECK(load_planetoid(dir.str(), "absent").status().code() == StatusCode::kNotFound);
    }
  }

  TEST_CASE("Planetoid: Cora and CiteSeer in data/ have the published sizes") {
    const std::string dir = opu::test::data_dir() + "/planetoid";
    Result<GraphDataset> cora = load_planetoid(dir, "cora");
    REQUIRE_MESSAGE(cora.ok(), cora.status().to_string());
    CHECK(cora->nodes.features.cols() == 2708);
    CHECK(cora->nodes.features.rows() == 1433);
    CHECK(cora->nodes.n_classes == 7);
    CHECK(cora->n_edges == 5278);
    std::int64_t counts[4] = {0, 0, 0, 0};
    for (std::uint8_t s : cora->split) ++counts[s];
    CHECK(counts[1] == 140);
    CHECK(counts[2] == 500);
    CHECK(counts[3] == 1000);
    Result<GraphDataset> citeseer = load_planetoid(dir, "citeseer");
    REQUIRE_MESSAGE(citeseer.ok(), citeseer.status().to_string());
    CHECK(citeseer->nodes.features.cols() == 3327);
    CHECK(citeseer->nodes.n_classes == 6);
    CHECK(citeseer->n_edges == 4552);
  }
  namespace {
  // Sets an environment variable for one scope, restoring its previous value (or its absence).
  class ScopedEnv {
   public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
      if (const char* old = std::getenv(name); old != nullptr) old_ = old;
      if (value != nullptr) {
        ::setenv(name, value, 1);
      } else {
        ::unsetenv(name);
      }
    }
    ~ScopedEnv() {
      if (old_) {
        ::setenv(name_.c_str(), old_->c_str(), 1);
      } else {
        ::unsetenv(name_.c_str());
      }
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

   private:
    std::string name_;
    std::optional<std::string> old_;
  };

  void make_data_set(const std::string& data_dir, const std::string& name) {
    std::filesystem::create_directories(std::filesystem::path(data_dir) / name);
  }
  }  // namespace

  TEST_CASE("find_data: $OPU_DATA overrides every other place, and is the only one searched") {
    test::TempDir root("find_data_env");
    make_data_set(root / "env", "planetoid");
    make_data_set(root / "source", "planetoid");
    DataSearch search;
    search.env_dir = root / "env";
    search.env_name = "OPU_DATA";
    search.source_dir = root / "source";
    search.cwd = root.str();
    Result<std::string> found = find_data("planetoid", search);
    REQUIRE_MESSAGE(found.ok(), found.status().to_string());
    CHECK(*found == root / "env/planetoid");

    // Set but without the data set: NOT_FOUND naming the variable, never a silent fallback.
    Result<std::string> missing = find_data("movielens", search);
    CHECK(missing.status().code() == StatusCode::kNotFound);
    const std::string& message = missing.status().message();
    CHECK(contains(message, root / "env/movielens"));
    CHECK(contains(message, "$OPU_DATA"));
    CHECK(contains(message, "unset it"));
    CHECK_FALSE(contains(message, root / "source"));
  }

  TEST_CASE("find_data: source tree, then the executable's folder and parents, then the cwd's") {
    test::TempDir root("find_data_order");
    const std::string source = root / "source/data";
    const std::string exe = root / "prefix/bin";
    const std::string cwd = root / "work/sub";
    std::filesystem::create_directories(exe);
    std::filesystem::create_directories(cwd);
    DataSearch search;
    search.source_dir = source;
    search.exe_dir = exe;
    search.cwd = cwd;
    // Only the current directory's parent has it.
    make_data_set(root / "work/data", "tinyshakespeare");
    Result<std::string> found = find_data("tinyshakespeare", search);
    REQUIRE_MESSAGE(found.ok(), found.status().to_string());
    CHECK(*found == root / "work/data/tinyshakespeare");
    // The executable's parent comes before the current directory.
    make_data_set(root / "prefix/data", "tinyshakespeare");
    CHECK(*find_data("tinyshakespeare", search) == root / "prefix/data/tinyshakespeare");
    // The compiled-in source folder comes first.
    make_data_set(source, "tinyshakespeare");
    CHECK(*find_data("tinyshakespeare", search) == source + "/tinyshakespeare");
    // Files are found like folders; "" is the data folder itself.
    std::ofstream(source + "/tinyshakespeare/input.txt") << "First Citizen:\n";
    CHECK(*find_data("tinyshakespeare/input.txt", search) == source + "/tinyshakespeare/input.txt");
    CHECK(*find_data("", search) == source);
  }

  TEST_CASE("find_data: not found lists every place searched, in order") {
    test::TempDir root("find_data_none");
    std::filesystem::create_directories(root / "a/b");
    DataSearch search;
    search.source_dir = root / "src/data";
    search.exe_dir = root / "a/b";
    search.cwd = root.str();
    Result<std::string> missing = find_data("no-such-data-set", search);
    REQUIRE(missing.status().code() == StatusCode::kNotFound);
    const std::string& message = missing.status().message();
    INFO(message);
    // A name no machine has: the search goes up to the root folder.
    const std::vector<std::string> expected = {
        root / "src/data/no-such-data-set", root / "a/b/data/no-such-data-set",
        root / "a/data/no-such-data-set", root / "data/no-such-data-set",
        " /data/no-such-data-set"};
    std::size_t at = 0;
    for (const std::string& path : expected) {
      const std::size_t next = message.find(path, at);
      CHECK_MESSAGE(next != std::string::npos, path);
      if (next != std::string::npos) at = next;
    }
    CHECK(contains(message, "'no-such-data-set' not found"));
    CHECK(contains(message, "source tree"));
    CHECK(contains(message, "executable"));
    CHECK(contains(message, "set OPU_DATA"));
    // The current directory's candidates are the executable's parents': each is listed once.
    CHECK(message.find(root / "data/no-such-data-set") ==
          message.rfind(root / "data/no-such-data-set"));

    CHECK(find_data("../etc", search).status().code() == StatusCode::kInvalidArgument);
    CHECK(find_data("/etc", search).status().code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("find_data: this process reads $OPU_DATA, then the deprecated $OPU_SHARED_DATA") {
    {
      ScopedEnv data("OPU_DATA", "/somewhere/data");
      ScopedEnv shared("OPU_SHARED_DATA", "/elsewhere");
      const DataSearch search = data_search_places();
      CHECK(search.env_dir == "/somewhere/data");
      CHECK(search.env_name == "OPU_DATA");
    }
    {
      ScopedEnv data("OPU_DATA", nullptr);
      ScopedEnv shared("OPU_SHARED_DATA", "/elsewhere");
      const DataSearch search = data_search_places();
      CHECK(search.env_dir == "/elsewhere");
      CHECK(search.env_name == "OPU_SHARED_DATA");
    }
    ScopedEnv data("OPU_DATA", nullptr);
    ScopedEnv shared("OPU_SHARED_DATA", nullptr);
    const DataSearch search = data_search_places();
    CHECK(search.env_dir.empty());
    CHECK(search.source_dir == opu::test::data_dir());  // compiled in: the repository's data/
    CHECK_FALSE(search.exe_dir.empty());
    CHECK_FALSE(search.cwd.empty());
    // With no setting, the shipped data sets are found in the repository.
    Result<std::string> planetoid = find_data("planetoid");
    REQUIRE_MESSAGE(planetoid.ok(), planetoid.status().to_string());
    CHECK(*planetoid == opu::test::data_dir() + "/planetoid");
  }

  TEST_CASE("data/: every shipped file is there, with the size data/README.md gives") {
    const std::vector<std::pair<std::string, std::uintmax_t>> files = {
        {"planetoid/cora.content", 217930},     {"planetoid/cora.edges", 48436},
        {"planetoid/cora.split", 5416},         {"planetoid/citeseer.content", 497296},
        {"planetoid/citeseer.edges", 42413},    {"planetoid/citeseer.split", 6654},
        {"tinyshakespeare/input.txt", 1115394}, {"movielens/ratings.csv", 2438266},
        {"movielens/movies.csv", 437373},       {"README.md", 0}};
    for (const auto& [name, bytes] : files) {
      const std::filesystem::path path = std::filesystem::path(opu::test::data_dir()) / name;
      INFO(path.string());
      REQUIRE(std::filesystem::is_regular_file(path));
      if (bytes > 0) CHECK(std::filesystem::file_size(path) == bytes);
    }
  }
}
