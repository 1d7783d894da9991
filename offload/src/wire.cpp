#include <charconv>

#include "internal.h"

namespace opu::offload {

spdlog::logger& logger() {
  // Looked up once: the executable registers its "offload" logger (its sinks, its level) before
  // the first call; libraries never create sinks of their own.
  static const std::shared_ptr<spdlog::logger> instance = [] {
    if (auto existing = spdlog::get("offload")) return existing;
    auto created = spdlog::default_logger()->clone("offload");
    try {
      spdlog::register_logger(created);
    } catch (const spdlog::spdlog_ex&) {
      if (auto existing = spdlog::get("offload")) return existing;  // registered concurrently
    }
    return created;
  }();
  return *instance;
}

void to_wire(const sim::DeviceInfo& info, pb::DeviceInfo* out) {
  out->set_model(info.model);
  out->set_simulated(info.simulated);
  out->set_max_n_in(info.max_n_in);
  out->set_max_n_out(info.max_n_out);
  out->set_adc_bits(info.adc_bits);
  out->set_frametime_us(info.frametime_us);
  out->set_exposure_us(info.exposure_us);
  out->set_supports_linear(info.supports_linear);
  out->set_max_batch(info.max_batch);
  out->set_api_version(info.api_version);
  out->set_max_exposure_us(info.max_exposure_us);
}

sim::DeviceInfo from_wire(const pb::DeviceInfo& info) {
  sim::DeviceInfo out;
  out.model = info.model();
  out.simulated = info.simulated();
  out.max_n_in = info.max_n_in();
  out.max_n_out = info.max_n_out();
  out.adc_bits = info.adc_bits();
  out.frametime_us = info.frametime_us();
  out.exposure_us = info.exposure_us();
  out.max_exposure_us = info.max_exposure_us();
  out.supports_linear = info.supports_linear();
  out.max_batch = info.max_batch();
  out.api_version = info.api_version();
  return out;
}

void to_wire(const sim::FrameInfo& info, pb::FrameInfo* out) {
  out->set_device_time_start_ns(info.device_time_start_ns);
  out->set_device_time_end_ns(info.device_time_end_ns);
  out->set_frames(info.frames);
  out->set_saturated_pixels(info.saturated_pixels);
  out->set_exposure_us(info.exposure_us);
}

sim::FrameInfo from_wire(const pb::FrameInfo& info) {
  sim::FrameInfo out;
  out.device_time_start_ns = info.device_time_start_ns();
  out.device_time_end_ns = info.device_time_end_ns();
  out.frames = info.frames();
  out.saturated_pixels = info.saturated_pixels();
  out.exposure_us = info.exposure_us();
  return out;
}

pb::Encoding to_wire(sim::Encoding encoding) {
  switch (encoding) {
    case sim::Encoding::kTernary:
      return pb::TERNARY;
    case sim::Encoding::kBitplanes:
      return pb::BITPLANES;
    case sim::Encoding::kStochastic:
      return pb::STOCHASTIC;
  }
  return pb::ENCODING_UNSPECIFIED;
}

sim::Encoding from_wire(pb::Encoding encoding) {
  return static_cast<sim::Encoding>(static_cast<int>(encoding));
}

void to_wire(const sim::LinearOptions& options, pb::LinearTransformRequest* out) {
  out->set_encoding(to_wire(options.encoding));
  out->set_threshold(options.threshold);
  out->set_bitplanes(options.bitplanes);
  out->set_dither_seed(options.dither_seed);
  out->set_share_frames(options.share_frames);
  out->set_repeats(options.repeats);
  out->set_reference_repeats(options.reference_repeats);
  out->set_exposure_us(options.exposure_us);
  out->set_reference_max_age_s(options.reference_max_age_s);
}

sim::LinearOptions linear_options_from_wire(const pb::LinearTransformRequest& request) {
  sim::LinearOptions options;
  options.encoding = from_wire(request.encoding());
  options.threshold = request.threshold();
  if (options.encoding != sim::Encoding::kTernary) options.bitplanes = request.bitplanes();
  options.dither_seed = request.dither_seed();
  options.share_frames = request.share_frames();
  options.repeats = request.repeats() == 0 ? 1 : request.repeats();  // 0: an older client
  options.reference_repeats = request.reference_repeats();
  options.exposure_us = request.exposure_us();  // 0 (also an older client's): automatic
  options.reference_max_age_s = request.reference_max_age_s();  // 0 (older client): every call
  return options;
}

Result<HostPort> split_host_port(std::string_view address, bool allow_port_zero) {
  // Appended, not "'" + std::string(address): GCC 12 at -O3 warns wrongly (-Wrestrict, GCC
  // bug 105651) about the const char* + std::string&& operator.
  std::string quoted = "'";
  quoted.append(address).append("'");
  const std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) {
    return invalid_argument("address " + quoted + " has no port, want HOST:PORT");
  }
  HostPort out;
  out.host = std::string(address.substr(0, colon));
  const std::string_view port = address.substr(colon + 1);
  if (out.host.empty()) return invalid_argument("address " + quoted + " has an empty host");
  if (out.host.front() == '[' && out.host.back() != ']') {
    return invalid_argument("address " + quoted + " has an unclosed '[' in its IPv6 host");
  }
  if (out.host.front() != '[' && out.host.find(':') != std::string::npos) {
    return invalid_argument("address " + quoted +
                            " has an IPv6 host without brackets, want [ADDR]:PORT");
  }
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), out.port);
  const int min_port = allow_port_zero ? 0 : 1;
  if (port.empty() || error != std::errc() || end != port.data() + port.size() ||
      out.port < min_port || out.port > 65535) {
    return invalid_argument("address " + quoted + ": port '" + std::string(port) +
                            "' is not a number in " + std::to_string(min_port) + "..65535");
  }
  return out;
}

}  // namespace opu::offload
