// Fuzz target: opu-study's spec (trainer/study/spec.cpp): its --config JSON file of opu-train
// options, and the --train, --sweep, --device, --seeds and --controls values it is combined with.
//
// Input: lines "KEY VALUE", in any order and number (at most 16 are used):
//   config {"epochs": 3}      --config FILE's content (apply_train_config)
//   train lr=0.05             --train NAME=VALUE (apply_train_setting)
//   sweep adc_bits=2:8:2      --sweep NAME=VALUES (parse_sweep)
//   device sim://?n_out=64    --device URI (replaces the default sim://; repeatable)
//   seeds 1,2                 --seeds
//   controls exact,matched    --controls
// then validate(), and for a valid spec what opu-study computes before any run: the points, each
// point's device URI and training options on every worker, the fingerprint.
// Properties: no crash, leak, hang or undefined behaviour; every point of a valid spec has options
// that finalize() accepts.
#include <charconv>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "spec.h"

namespace {

using opu::trainer::study::StudySpec;

bool apply_line(std::string_view line, StudySpec& spec, bool& devices_given) {
  const std::size_t space = line.find(' ');
  const std::string_view key = line.substr(0, space);
  const std::string value(space == std::string_view::npos ? std::string_view()
                                                          : line.substr(space + 1));
  if (key == "config")
    return opu::trainer::study::apply_train_config(value, "fuzz.json", spec.train).ok();
  if (key == "train") return opu::trainer::study::apply_train_setting(value, spec.train).ok();
  if (key == "sweep") {
    opu::Result<opu::trainer::study::SweepAxis> axis = opu::trainer::study::parse_sweep(value);
    if (axis.ok()) spec.sweeps.push_back(*axis);
    return axis.ok();
  }
  if (key == "device") {
    if (!devices_given) spec.devices.clear();
    devices_given = true;
    spec.devices.push_back(value);
    return true;
  }
  if (key == "seeds") {
    spec.seeds.clear();
    for (std::string_view item : opu::fuzz::split(value, ",")) {
      std::uint64_t seed = 0;
      const auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), seed);
      if (error != std::errc() || end != item.data() + item.size()) return false;
      spec.seeds.push_back(seed);
    }
    return true;
  }
  if (key == "controls") {
    for (std::string_view item : opu::fuzz::split(value, ",")) {
      if (item == "exact") {
        spec.exact_control = true;
      } else if (item == "matched") {
        spec.matched_control = true;
      } else {
        return false;
      }
    }
    return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  StudySpec spec;
  bool devices_given = false;
  int used = 0;
  for (std::string_view line : opu::fuzz::split(opu::fuzz::as_text(data, size), "\n")) {
    if (line.empty()) continue;
    if (++used > 16 || !apply_line(line, spec, devices_given)) return 0;
  }
  if (!opu::trainer::study::validate(spec).ok()) return 0;
  for (const opu::trainer::study::Point& point : opu::trainer::study::expand_points(spec)) {
    for (const std::string& uri : spec.devices) {
      opu::Result<std::string> device = opu::trainer::study::point_device_uri(uri, point);
      OPU_FUZZ_CHECK(device.ok(),
                     "valid spec, point " + point.key + ": " + device.status().to_string());
      opu::Result<opu::trainer::app::Options> options =
          opu::trainer::study::run_options(spec, point, spec.seeds.front(), uri, 2.0);
      OPU_FUZZ_CHECK(options.ok(),
                     "valid spec, point " + point.key + ": " + options.status().to_string());
    }
  }
  (void)opu::trainer::study::fingerprint(spec);
  return 0;
}
