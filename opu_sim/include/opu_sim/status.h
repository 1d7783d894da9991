// Status and Result<T>: expected failures as values.
//
// Codes are gRPC's canonical codes with the same numbers, so the RPC edge is a cast. Conventions:
// kInvalidArgument = the request itself is malformed; kFailedPrecondition = a valid request in the
// wrong state; kOutOfRange = beyond the device's limits. Messages say what, where, got and wanted:
// "Transform: inputs has 96 bytes, want batch*ceil(n_in/8) = 128".
//
// Broken invariants are not Status: they throw via OPU_CHECK (file:line in the message).
#pragma once

#include <cassert>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace opu {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

/// The canonical upper-case name, e.g. "INVALID_ARGUMENT".
std::string_view status_code_name(StatusCode code);

/// Success, or a code and a message a person can act on. Cheap to copy when ok.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "INVALID_ARGUMENT: Transform: batch is 0, want >= 1"
  std::string to_string() const;

  /// Prefixes the message with context ("loading calibration: ...") and keeps the code.
  Status with_context(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string message) {
  return {StatusCode::kInvalidArgument, std::move(message)};
}
inline Status out_of_range(std::string message) {
  return {StatusCode::kOutOfRange, std::move(message)};
}
inline Status failed_precondition(std::string message) {
  return {StatusCode::kFailedPrecondition, std::move(message)};
}
inline Status not_found(std::string message) { return {StatusCode::kNotFound, std::move(message)}; }
inline Status unavailable(std::string message) {
  return {StatusCode::kUnavailable, std::move(message)};
}
inline Status internal_error(std::string message) {
  return {StatusCode::kInternal, std::move(message)};
}
inline Status unimplemented(std::string message) {
  return {StatusCode::kUnimplemented, std::move(message)};
}
inline Status data_loss(std::string message) { return {StatusCode::kDataLoss, std::move(message)}; }

/// Thrown by value() on a failed Result, and by OPU_CHECK.
class StatusError : public std::runtime_error {
 public:
  explicit StatusError(Status status)
      : std::runtime_error(status.to_string()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

/// A value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) {
      status_ = internal_error("Result constructed from an ok Status without a value");
    }
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  /// The value; throws StatusError when there is none.
  T& value() & {
    check();
    return *value_;
  }
  const T& value() const& {
    check();
    return *value_;
  }
  T&& value() && {
    check();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const {
    if (!value_) throw StatusError(status_);
  }
  Status status_;
  std::optional<T> value_;
};

namespace detail {
[[noreturn]] void check_failed(const char* condition, const char* file, int line,
                               std::string_view message);
}  // namespace detail

}  // namespace opu

/// Checks an internal invariant; throws opu::StatusError(kInternal) naming file:line when broken.
#define OPU_CHECK(condition, message)                                          \
  do {                                                                         \
    if (!(condition)) {                                                        \
      ::opu::detail::check_failed(#condition, __FILE__, __LINE__, (message)); \
    }                                                                          \
  } while (false)

/// Returns the Status of an expression from the enclosing function when it is not ok.
#define OPU_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::opu::Status opu_status_ = (expr);        \
    if (!opu_status_.ok()) return opu_status_; \
  } while (false)
