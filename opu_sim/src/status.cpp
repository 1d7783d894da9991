#include "opu_sim/status.h"

#include <array>
#include <sstream>

namespace opu {

std::string_view status_code_name(StatusCode code) {
  static constexpr std::array<std::string_view, 17> kNames = {"OK",
                                                              "CANCELLED",
                                                              "UNKNOWN",
                                                              "INVALID_ARGUMENT",
                                                              "DEADLINE_EXCEEDED",
                                                              "NOT_FOUND",
                                                              "ALREADY_EXISTS",
                                                              "PERMISSION_DENIED",
                                                              "RESOURCE_EXHAUSTED",
                                                              "FAILED_PRECONDITION",
                                                              "ABORTED",
                                                              "OUT_OF_RANGE",
                                                              "UNIMPLEMENTED",
                                                              "INTERNAL",
                                                              "UNAVAILABLE",
                                                              "DATA_LOSS",
                                                              "UNAUTHENTICATED"};
  const auto index = static_cast<std::size_t>(code);
  return index < kNames.size() ? kNames[index] : std::string_view("UNKNOWN");
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  std::string text(status_code_name(code_));
  text += ": ";
  text += message_;
  return text;
}

Status Status::with_context(std::string_view context) const {
  if (ok()) return *this;
  return {code_, std::string(context) + ": " + message_};
}

namespace detail {
void check_failed(const char* condition, const char* file, int line, std::string_view message) {
  std::ostringstream text;
  text << file << ":" << line << ": check failed: " << condition << ": " << message;
  throw StatusError(Status(StatusCode::kInternal, text.str()));
}
}  // namespace detail

}  // namespace opu
