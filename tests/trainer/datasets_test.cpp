// IDX and Planetoid loading, and every bad-input path naming the file, value and expectation.
#include "trainer/datasets.h"

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

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

  TEST_CASE("Planetoid: Cora and CiteSeer from ../shared/data have the published sizes") {
    const std::string dir = opu::test::shared_data_dir() + "/planetoid";
    if (!std::filesystem::exists(dir + "/cora.content")) {
      MESSAGE("skipped: " << dir << " not found");
      return;
    }
    Result<GraphDataset> cora = load_planetoid(dir, "cora");
    REQUIRE(cora.ok());
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
    REQUIRE(citeseer.ok());
    CHECK(citeseer->nodes.features.cols() == 3327);
    CHECK(citeseer->nodes.n_classes == 6);
    CHECK(citeseer->n_edges == 4552);
  }
}
