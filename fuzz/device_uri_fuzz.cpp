// Fuzz target: device URIs and the simulator's parameters (offload/src/open_device.cpp,
// opu_sim/src/sim_config.cpp), as opu-train --feedback, opu-calibrate --device and opu-study
// --device take them.
//
// Input: one URI.
//   sim:...     sim_config_from_uri() (what open_device() parses: the query,
//   SimConfig::from_params,
//               SimConfig::validate); an accepted configuration of a small device is then built
//               and takes one frame, so that every configuration the checks accept is usable.
//   grpc(s):... remote_options_from_uri() (addresses, query; token= and ca= name files, which are
//               read: the fuzzer runs in a scratch directory).
//   anything else goes to both.
// Properties: no crash, leak or undefined behaviour; an accepted sim:// configuration passes
// validate() and, when small, creates a device whose one-frame transform succeeds; accepted remote
// options have at least one address and positive limits.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "offload/open_device.h"
#include "opu_sim/sim_device.h"

namespace {

void fuzz_sim(std::string_view uri) {
  opu::Result<opu::sim::SimConfig> parsed = opu::offload::sim_config_from_uri(uri);
  if (!parsed.ok()) return;
  opu::sim::SimConfig config = *parsed;
  OPU_FUZZ_CHECK(config.validate().ok(),
                 "accepted, then invalid: " + config.validate().to_string());
  // Build it only when it is small and quick: a device of 2^31 x 2^31 is valid but not for here.
  // Pacing to the device clock (realtime), compute threads and the structured medium's FFTW
  // planning (which reads and writes fft_wisdom files) are not what is being tested.
  if (config.n_in * config.n_out > 4096 || config.medium == opu::sim::MediumKind::kStructured) {
    return;
  }
  config.realtime = false;
  config.threads = 1;
  opu::Result<std::unique_ptr<opu::sim::SimDevice>> device = opu::sim::SimDevice::create(config);
  OPU_FUZZ_CHECK(device.ok(), "accepted, then not created: " + device.status().to_string());
  // One frame with every other mirror on; the padding bits of its last byte stay zero, as the wire
  // contract requires.
  std::vector<std::uint8_t> frame(static_cast<std::size_t>((config.n_in + 7) / 8), 0x55);
  if (config.n_in % 8 != 0) {
    frame.back() &= static_cast<std::uint8_t>((1U << (config.n_in % 8)) - 1U);
  }
  opu::sim::TransformRequest request;
  request.n_in = config.n_in;
  request.n_out = config.n_out;
  request.batch = 1;
  request.inputs = frame;
  opu::Result<opu::sim::Frames> frames = (*device)->transform(request);
  OPU_FUZZ_CHECK(frames.ok(), "one frame on an accepted device: " + frames.status().to_string());
}

void fuzz_remote(std::string_view uri) {
  opu::Result<opu::offload::RemoteOptions> options = opu::offload::remote_options_from_uri(uri);
  if (!options.ok()) return;
  OPU_FUZZ_CHECK(!options->addresses.empty(), "accepted without an address");
  OPU_FUZZ_CHECK(options->deadline.count() > 0 && options->retry.max_attempts >= 1 &&
                     options->retry.initial_backoff.count() > 0 &&
                     options->retry.max_backoff >= options->retry.initial_backoff &&
                     options->max_message_bytes > 0,
                 "accepted with a limit that is not positive");
  // What RemoteDevice does with them (remote_device.cpp): deadlines and backoffs are added to the
  // system clock (nanoseconds), and each backoff grows by the multiplier in double.
  const auto now = std::chrono::system_clock::now();
  (void)(now + options->deadline);
  (void)(now + options->retry.max_backoff);
  const double grown =
      static_cast<double>(options->retry.max_backoff.count()) * options->retry.multiplier;
  (void)std::chrono::milliseconds(static_cast<std::int64_t>(grown));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view uri = opu::fuzz::as_text(data, size);
  const bool sim = uri.starts_with("sim:");
  const bool remote = uri.starts_with("grpc");
  if (sim || !remote) fuzz_sim(uri);
  if (remote || !sim) fuzz_remote(uri);
  return 0;
}
