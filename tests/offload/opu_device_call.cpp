// opu-device-call: one Transform or LinearTransform through the C++ open_device(), for the Python
// package's tests and benchmarks (python/tests, docs/python.md). It is the C++ side of "the Python
// client gives the same bits as the C++ device and the C++ client": sim:// is the in-process
// simulator, grpc:// the C++ RemoteDevice.
//
//   opu-device-call URI transform n_in=N n_out=N batch=N in=FILE out=FILE [exposure_us=X]
//   opu-device-call URI linear n_in=N n_out=N batch=N in=FILE out=FILE [encoding=ternary|...
//       threshold=X bitplanes=N dither_seed=N share_frames=0|1 repeats=N reference_repeats=N
//       exposure_us=X reference_max_age_s=X]
//   ... [calls=K]   the same call K times (a benchmark); the last answer is written
//
// `in` holds the request's bulk bytes in the wire layout (packed frames, or float32 values sample
// after sample); `out` receives the answer in the wire layout (counts frame after frame, or
// float32 projections sample after sample). stdout: one JSON object with the FrameInfo of the last
// call and the wall time per call (median over the calls, microseconds). Exit 1 on a device error
// (its status on stderr), 2 on bad arguments.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "offload/open_device.h"
#include "opu_sim/device.h"

namespace {

int usage(const std::string& message) {
  std::cerr << "opu-device-call: " << message
            << "\nusage: opu-device-call URI transform|linear n_in=N n_out=N batch=N in=FILE "
               "out=FILE [options]\n";
  return 2;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage("want a URI and a call");
  const std::string uri = argv[1];
  const std::string call = argv[2];
  std::map<std::string, std::string> args;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::size_t eq = arg.find('=');
    if (eq == std::string::npos) return usage("'" + arg + "' is not name=value");
    args[arg.substr(0, eq)] = arg.substr(eq + 1);
  }
  const auto get = [&](const std::string& name, const std::string& fallback) {
    const auto found = args.find(name);
    return found == args.end() ? fallback : found->second;
  };
  std::int64_t n_in = 0;
  std::int64_t n_out = 0;
  std::int64_t batch = 0;
  int calls = 1;
  try {
    n_in = std::stoll(get("n_in", "0"));
    n_out = std::stoll(get("n_out", "0"));
    batch = std::stoll(get("batch", "0"));
    calls = std::max(1, std::stoi(get("calls", "1")));
  } catch (const std::exception&) {
    return usage("n_in, n_out, batch and calls must be integers");
  }
  const std::vector<char> in = read_file(get("in", ""));

  opu::Result<std::unique_ptr<opu::sim::Device>> device = opu::offload::open_device(uri);
  if (!device.ok()) {
    std::cerr << device.status().to_string() << "\n";
    return 1;
  }
  std::vector<double> wall_us;
  std::vector<char> answer;
  opu::sim::FrameInfo info;
  for (int k = 0; k < calls; ++k) {
    const auto start = std::chrono::steady_clock::now();
    if (call == "transform") {
      opu::sim::TransformRequest request;
      request.n_in = n_in;
      request.n_out = n_out;
      request.batch = batch;
      request.inputs = {reinterpret_cast<const std::uint8_t*>(in.data()), in.size()};
      request.exposure_us = std::stod(get("exposure_us", "0"));
      opu::Result<opu::sim::Frames> frames = (*device)->transform(request);
      if (!frames.ok()) {
        std::cerr << frames.status().to_string() << "\n";
        return 1;
      }
      answer.assign(frames->data.begin(), frames->data.end());
      info = frames->info;
    } else if (call == "linear") {
      opu::sim::LinearRequest request;
      request.n_in = n_in;
      request.n_out = n_out;
      request.batch = batch;
      request.values = {reinterpret_cast<const float*>(in.data()), in.size() / sizeof(float)};
      opu::Result<opu::sim::Encoding> encoding = opu::sim::parse_encoding(get("encoding", "ternary"));
      if (!encoding.ok()) return usage(encoding.status().to_string());
      opu::sim::LinearOptions& o = request.options;
      o.encoding = *encoding;
      o.threshold = std::stof(get("threshold", "0.1"));
      o.bitplanes = std::stoi(get("bitplanes", "4"));
      o.dither_seed = std::stoull(get("dither_seed", "0"));
      o.share_frames = get("share_frames", "0") == "1";
      o.repeats = std::stoi(get("repeats", "1"));
      o.reference_repeats = std::stoi(get("reference_repeats", "0"));
      o.exposure_us = std::stod(get("exposure_us", "0"));
      o.reference_max_age_s = std::stod(get("reference_max_age_s", "0"));
      opu::Result<opu::sim::Projections> projections = (*device)->linear_transform(request);
      if (!projections.ok()) {
        std::cerr << projections.status().to_string() << "\n";
        return 1;
      }
      // n_out x batch column-major is batch x n_out sample after sample: the wire layout.
      const auto* bytes = reinterpret_cast<const char*>(projections->values.data());
      answer.assign(bytes, bytes + projections->values.size() * static_cast<long>(sizeof(float)));
      info = projections->info;
    } else {
      return usage("call '" + call + "' unknown, want transform or linear");
    }
    wall_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::ofstream(get("out", "/dev/null"), std::ios::binary)
      .write(answer.data(), static_cast<std::streamsize>(answer.size()));
  std::sort(wall_us.begin(), wall_us.end());
  std::printf(
      "{\"device_time_start_ns\": %lld, \"device_time_end_ns\": %lld, \"frames\": %lld, "
      "\"saturated_pixels\": %lld, \"exposure_us\": %.17g, \"calls\": %d, "
      "\"median_call_us\": %.3f}\n",
      static_cast<long long>(info.device_time_start_ns),
      static_cast<long long>(info.device_time_end_ns), static_cast<long long>(info.frames),
      static_cast<long long>(info.saturated_pixels), info.exposure_us, calls,
      wall_us[wall_us.size() / 2]);
  return 0;
}
