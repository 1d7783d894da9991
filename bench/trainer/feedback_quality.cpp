// opu-feedback-quality: what each OPU feedback scheme does to B·e, measured on the simulated
// device against its exact digital projector (docs/camera-gap.md).
//
// For a batch of softmax cross-entropy errors (what DFA projects), each scheme projects the batch
// K times (a fresh dither seed each time) and the tool reports, relative to |B e|²:
//   error      mean squared error of one projection (dither + camera noise + bias)
//   bias       squared error of the K-call mean, less the share of the noise that survives
//              averaging (error / K): what averaging over steps cannot remove
//   coherence  |Σ_s err_s|² / Σ_s |err_s|²: 1 when the errors of the batch's samples are
//              independent, up to the batch size when they are common to all (such errors do not
//              average out in a weight gradient Σ_s δ_s x_sᵀ)
// and the frames per sample. Deterministic: fixed seeds.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "opu_sim/cli_validators.h"
#include "opu_sim/sim_device.h"
#include "trainer/projection_quality.h"

namespace {

using opu::sim::Encoding;
using opu::sim::LinearOptions;

struct Scheme {
  std::string name;
  std::string camera;  // "realistic" or "ideal"
  LinearOptions options;
};

LinearOptions options(Encoding encoding, int bitplanes, bool share, int repeats,
                      int reference_repeats) {
  LinearOptions o;
  o.encoding = encoding;
  o.threshold = 0.1F;
  o.bitplanes = bitplanes;
  o.share_frames = share;
  o.repeats = repeats;
  o.reference_repeats = reference_repeats;
  return o;
}

std::vector<Scheme> schemes() {
  return {
      {"ternary (literal)", "realistic", options(Encoding::kTernary, 1, false, 1, 0)},
      {"ternary, ideal camera", "ideal", options(Encoding::kTernary, 1, false, 1, 0)},
      {"stochastic, 1 plane", "realistic", options(Encoding::kStochastic, 1, false, 1, 0)},
      {"stochastic, 2 planes", "realistic", options(Encoding::kStochastic, 2, false, 1, 0)},
      {"+ shared frames", "realistic", options(Encoding::kStochastic, 2, true, 1, 0)},
      {"+ 32 reference frames", "realistic", options(Encoding::kStochastic, 2, true, 1, 32)},
      {"+ 4 repeats", "realistic", options(Encoding::kStochastic, 2, true, 4, 32)},
      {"+ 256 reference frames (default)", "realistic",
       opu::trainer::recommended_linear_options()},
      {"default, no shared frames", "realistic", options(Encoding::kStochastic, 2, false, 4, 256)},
      {"default, ideal camera", "ideal", opu::trainer::recommended_linear_options()},
  };
}

std::unique_ptr<opu::sim::SimDevice> make_device(const std::string& camera, std::int64_t n_out) {
  auto params = opu::sim::parse_query("seed=7&n_out=" + std::to_string(n_out) + "&camera=" + camera);
  auto config = opu::sim::SimConfig::from_params(*params);
  auto device = opu::sim::SimDevice::create(*config);
  if (!device.ok()) throw opu::StatusError(device.status());
  return std::move(*device);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"opu-feedback-quality: bias, error and batch coherence of each OPU feedback scheme"};
  int calls = 16;
  std::int64_t batch = 128;
  std::int64_t n_out = 256;
  std::uint64_t seed = 1;
  cli.add_option("--calls", calls, "projections of the batch per scheme (16)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(2, 1000)));
  cli.add_option("--batch", batch, "error vectors per call (128)")
      ->check(opu::in_range<std::int64_t>(opu::ValueRange::integers(1, 4096)));
  cli.add_option("--n-out", n_out, "projection size (256: the paper's hidden width)")
      ->check(opu::in_range<std::int64_t>(opu::ValueRange::integers(1, 1024)));
  cli.add_option("--seed", seed, "seed of the error vectors (1)")
      ->check(opu::in_range<std::uint64_t>(opu::ValueRange::at_least(0)));
  CLI11_PARSE(cli, argc, argv);

  const Eigen::MatrixXf errors = opu::trainer::error_like_vectors(10, batch, seed);
  const opu::sim::LinearRequest exact_request{
      10, n_out, batch, {errors.data(), static_cast<std::size_t>(errors.size())}, {}};
  std::printf("%-26s %10s %10s %10s %10s\n", "scheme", "error", "bias", "coherence",
              "frames/vec");
  for (const Scheme& scheme : schemes()) {
    auto device = make_device(scheme.camera, n_out);
    auto exact = device->exact_linear(exact_request);
    if (!exact.ok()) throw opu::StatusError(exact.status());
    const double signal = exact->squaredNorm();
    Eigen::MatrixXf mean = Eigen::MatrixXf::Zero(n_out, batch);
    double error = 0.0;
    double coherence = 0.0;
    std::int64_t frames = 0;
    for (int k = 0; k < calls; ++k) {
      opu::sim::LinearRequest request = exact_request;
      request.options = scheme.options;
      request.options.dither_seed = static_cast<std::uint64_t>(k + 1);
      auto projected = device->linear_transform(request);
      if (!projected.ok()) throw opu::StatusError(projected.status());
      const Eigen::MatrixXf difference = projected->values - *exact;
      error += difference.squaredNorm() / signal / calls;
      coherence += difference.rowwise().sum().squaredNorm() / difference.squaredNorm() / calls;
      mean += projected->values / static_cast<float>(calls);
      frames += projected->info.frames;
    }
    const double bias = (mean - *exact).squaredNorm() / signal - error / calls;
    std::printf("%-26s %10.4f %10.4f %10.2f %10.2f\n", scheme.name.c_str(), error, bias, coherence,
                static_cast<double>(frames) / static_cast<double>(calls * batch));
  }
  return 0;
}
