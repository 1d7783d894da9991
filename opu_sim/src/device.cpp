#include "opu_sim/device.h"

#include <cmath>
#include <string>

#include "opu_sim/packing.h"

namespace opu::sim {
namespace {

std::string str(std::int64_t value) { return std::to_string(value); }

// The checks shared by both calls: sizes in [1, max].
Status validate_shape(std::string_view call, std::int64_t n_in, std::int64_t max_n_in,
                      std::string_view n_in_name, std::int64_t n_out, std::int64_t batch,
                      const DeviceInfo& info) {
  const std::string prefix = std::string(call) + ": ";
  if (n_in < 1) {
    return invalid_argument(prefix + std::string(n_in_name) + " is " + str(n_in) + ", want >= 1");
  }
  if (n_in > max_n_in) {
    return out_of_range(prefix + std::string(n_in_name) + " " + str(n_in) +
                        " above device max_n_in " + str(max_n_in));
  }
  if (n_out < 1) return invalid_argument(prefix + "n_out is " + str(n_out) + ", want >= 1");
  if (n_out > info.max_n_out) {
    return out_of_range(prefix + "n_out " + str(n_out) + " above device max_n_out " +
                        str(info.max_n_out));
  }
  if (batch < 1) return invalid_argument(prefix + "batch is " + str(batch) + ", want >= 1");
  if (info.max_batch > 0 && batch > info.max_batch) {
    return out_of_range(prefix + "batch " + str(batch) + " above device max_batch " +
                        str(info.max_batch) + " (split it, or stream it)");
  }
  return {};
}

// An exposure in [0, max_exposure_us]; `zero_means` says what 0 asks for.
Status validate_exposure(std::string_view call, double exposure_us, std::string_view zero_means,
                         const DeviceInfo& info) {
  const std::string prefix = std::string(call) + ": exposure_us ";
  if (!std::isfinite(exposure_us) || exposure_us < 0.0) {
    return invalid_argument(prefix + "is " + std::to_string(exposure_us) + ", want 0 (" +
                            std::string(zero_means) + ") or a positive number of microseconds");
  }
  if (info.max_exposure_us > 0.0 && exposure_us > info.max_exposure_us) {
    return out_of_range(prefix + std::to_string(exposure_us) + " above device max_exposure_us " +
                        std::to_string(info.max_exposure_us));
  }
  return {};
}

}  // namespace

std::string_view encoding_name(Encoding encoding) {
  switch (encoding) {
    case Encoding::kTernary:
      return "ternary";
    case Encoding::kBitplanes:
      return "bitplanes";
    case Encoding::kStochastic:
      return "stochastic";
  }
  return "unknown";
}

Result<Encoding> parse_encoding(std::string_view name) {
  for (const Encoding encoding :
       {Encoding::kTernary, Encoding::kBitplanes, Encoding::kStochastic}) {
    if (name == encoding_name(encoding)) return encoding;
  }
  return invalid_argument("encoding '" + std::string(name) +
                          "' is unknown, want ternary, bitplanes or stochastic");
}

Eigen::MatrixXf Frames::to_float() const {
  Eigen::MatrixXf counts(n_out, batch);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t p = 0; p < n_out; ++p) counts(p, b) = static_cast<float>(count(b, p));
  }
  return counts;
}

Status validate(const TransformRequest& request, const DeviceInfo& info) {
  OPU_RETURN_IF_ERROR(validate_shape("Transform", request.n_in, info.max_n_in, "n_in",
                                     request.n_out, request.batch, info));
  const std::int64_t want = request.batch * packed_bytes(request.n_in);
  if (static_cast<std::int64_t>(request.inputs.size()) != want) {
    return invalid_argument("Transform: inputs has " + str(request.inputs.size()) +
                            " bytes, want batch*ceil(n_in/8) = " + str(want));
  }
  return validate_exposure("Transform", request.exposure_us, "device default", info);
}

Status validate(const LinearRequest& request, const DeviceInfo& info) {
  // A linear call needs mirrors for its features and for the reference: the device refines this
  // bound (HolographyLayout::fit); here only what every device shares.
  OPU_RETURN_IF_ERROR(validate_shape("LinearTransform", request.n_in, info.max_n_in, "n_in",
                                     request.n_out, request.batch, info));
  const std::int64_t want = request.batch * request.n_in;
  if (static_cast<std::int64_t>(request.values.size()) != want) {
    return invalid_argument("LinearTransform: values has " + str(request.values.size()) +
                            " floats, want batch*n_in = " + str(want));
  }
  for (std::size_t i = 0; i < request.values.size(); ++i) {
    if (!std::isfinite(request.values[i])) {
      const auto n_in = static_cast<std::size_t>(request.n_in);
      return invalid_argument("LinearTransform: values[" + std::to_string(i) + "] (sample " +
                              std::to_string(i / n_in) + ", component " + std::to_string(i % n_in) +
                              ") is " + std::to_string(request.values[i]) +
                              ", want a finite number");
    }
  }
  const LinearOptions& options = request.options;
  if (options.repeats < 1 || options.repeats > 64) {
    return invalid_argument("LinearTransform: repeats is " + std::to_string(options.repeats) +
                            ", want 1..64");
  }
  if (options.reference_repeats < 0 || options.reference_repeats > kMaxReferenceRepeats) {
    return invalid_argument("LinearTransform: reference_repeats is " +
                            std::to_string(options.reference_repeats) +
                            ", want 0 (device default) .. " + std::to_string(kMaxReferenceRepeats));
  }
  if (!(options.reference_max_age_s >= 0.0 && std::isfinite(options.reference_max_age_s))) {
    return invalid_argument("LinearTransform: reference_max_age_s is " +
                            std::to_string(options.reference_max_age_s) +
                            ", want device seconds >= 0 (0 = measure I(r) in every call)");
  }
  OPU_RETURN_IF_ERROR(validate_exposure("LinearTransform", options.exposure_us, "automatic", info));
  switch (options.encoding) {
    case Encoding::kTernary:
      if (!(options.threshold >= 0.0F && options.threshold < 1.0F)) {
        return invalid_argument("LinearTransform: threshold is " +
                                std::to_string(options.threshold) +
                                ", want a fraction of the sample's max |v| in [0, 1)");
      }
      break;
    case Encoding::kBitplanes:
    case Encoding::kStochastic:
      if (options.bitplanes < 1 || options.bitplanes > 16) {
        return invalid_argument("LinearTransform: bitplanes is " +
                                std::to_string(options.bitplanes) + ", want 1..16");
      }
      break;
    default:
      return invalid_argument("LinearTransform: encoding is " +
                              std::to_string(static_cast<int>(options.encoding)) +
                              ", want TERNARY (1), BITPLANES (2) or STOCHASTIC (3)");
  }
  return {};
}

Result<Frames> Device::transform(const TransformRequest& request) {
  OPU_RETURN_IF_ERROR(validate(request, info()));
  return do_transform(request);
}

Result<Projections> Device::linear_transform(const LinearRequest& request) {
  OPU_RETURN_IF_ERROR(validate(request, info()));
  return do_linear_transform(request);
}

}  // namespace opu::sim
