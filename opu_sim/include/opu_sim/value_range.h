// Accepted ranges of numeric settings, one form for every executable: a flag's value, a JSON
// config value and a `--train NAME=VALUE` are checked against the same ValueRange and refused with
// the same words, naming the setting, the value and the range:
//
//   --lr: -1 is out of range; expected a number > 0
//   --epochs: 2.5 is out of range; expected an integer >= 1
//   --method: 'backprop' is not a known value; expected one of bp, dfa, shallow
//
// A value is never replaced by a default or clamped: what is out of range is an error. "Not set"
// is std::optional (or the absence of a key), never a special number.
#pragma once

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "opu_sim/status.h"

namespace opu {

/// A closed, open or half-open interval of numbers, optionally of integers only.
struct ValueRange {
  double low = -std::numeric_limits<double>::infinity();
  double high = std::numeric_limits<double>::infinity();
  bool low_open = false;   // low itself is excluded
  bool high_open = false;  // high itself is excluded
  bool integer = false;
  std::string note;  // appended to the words, e.g. "0 = off"

  /// a number > 0 (finite)
  static ValueRange positive(std::string note = {}) {
    return {0.0, kInf, true, false, false, note};
  }
  /// a number >= 0 (finite)
  static ValueRange non_negative(std::string note = {}) {
    return {0.0, kInf, false, false, false, note};
  }
  /// a number in [low, high]
  static ValueRange closed(double low, double high, std::string note = {}) {
    return {low, high, false, false, false, note};
  }
  /// a number in [low, high), e.g. a probability that must stay below 1
  static ValueRange closed_open(double low, double high, std::string note = {}) {
    return {low, high, false, true, false, note};
  }
  /// a number in (low, high]
  static ValueRange open_closed(double low, double high, std::string note = {}) {
    return {low, high, true, false, false, note};
  }
  /// a number in (low, high)
  static ValueRange open(double low, double high, std::string note = {}) {
    return {low, high, true, true, false, note};
  }
  /// an integer >= low
  static ValueRange at_least(double low, std::string note = {}) {
    return {low, kInf, false, false, true, note};
  }
  /// an integer in [low, high]
  static ValueRange integers(double low, double high, std::string note = {}) {
    return {low, high, false, false, true, note};
  }

  /// Finite, within the bounds, integral when `integer`.
  bool contains(double value) const {
    if (!std::isfinite(value)) return false;
    if (integer && value != std::floor(value)) return false;
    if (low_open ? !(value > low) : !(value >= low)) return false;
    if (high_open ? !(value < high) : !(value <= high)) return false;
    return true;
  }

  /// What is accepted, in words: "a number > 0", "an integer in [1, 64]", "a number in [0, 1)".
  std::string expected() const {
    std::string words = integer ? "an integer" : "a number";
    const bool bounded_low = std::isfinite(low);
    const bool bounded_high = std::isfinite(high);
    if (bounded_low && bounded_high) {
      words += std::string(" in ") + (low_open ? "(" : "[") + format(low) + ", " + format(high) +
               (high_open ? ")" : "]");
    } else if (bounded_low) {
      words += std::string(low_open ? " > " : " >= ") + format(low);
    } else if (bounded_high) {
      words += std::string(high_open ? " < " : " <= ") + format(high);
    }
    if (!note.empty()) words += " (" + note + ")";
    return words;
  }

  /// A number as people write it: integers without a decimal point, others to 10 digits.
  static std::string format(double value) {
    char buffer[40];
    if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15) {
      std::snprintf(buffer, sizeof(buffer), "%.0f", value);
    } else {
      std::snprintf(buffer, sizeof(buffer), "%.10g", value);
    }
    return buffer;
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();
};

/// "VALUE is out of range; expected WORDS" (no setting name: callers prefix it, CLI11 too).
inline std::string out_of_range_text(std::string_view value, const ValueRange& range) {
  return std::string(value) + " is out of range; expected " + range.expected();
}

/// "'VALUE' is not a known value; expected one of A, B, C".
inline std::string not_one_of_text(std::string_view value,
                                   const std::vector<std::string>& choices) {
  std::string list;
  for (const std::string& choice : choices) list += (list.empty() ? "" : ", ") + choice;
  return "'" + std::string(value) + "' is not a known value; expected one of " + list;
}

/// Parses `text` as a T within `range`. INVALID_ARGUMENT, without the setting's name, for text
/// that is not a number ("abc is not a number; expected ...") or a number out of range
/// ("-1 is out of range; expected ..."). Integers are parsed exactly (any uint64_t seed); a
/// written-out integral value ("1e3", "2.0") is an integer too.
template <typename T>
Result<T> parse_in_range(std::string_view text, const ValueRange& range) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>);
  const auto not_a_number = [&] {
    return invalid_argument(std::string(text) + " is not a number; expected " + range.expected());
  };
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (text.empty()) return not_a_number();
  if constexpr (std::is_integral_v<T>) {
    T value{};
    const auto [end, error] = std::from_chars(first, last, value);
    if (error == std::errc() && end == last) {
      if (!range.contains(static_cast<double>(value))) {
        return invalid_argument(out_of_range_text(text, range));
      }
      return value;
    }
    if (error == std::errc::result_out_of_range && end == last) {
      return invalid_argument(out_of_range_text(text, range));
    }
  }
  const std::string copy(text);
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || std::isnan(value)) return not_a_number();
  if (!range.contains(value)) return invalid_argument(out_of_range_text(text, range));
  if constexpr (std::is_integral_v<T>) {
    // Integral here, but not written as one ("1e3"): it must fit T.
    if (!(value >= static_cast<double>(std::numeric_limits<T>::lowest()) &&
          value < std::ldexp(1.0, std::numeric_limits<T>::digits))) {
      return invalid_argument(out_of_range_text(text, range));
    }
    return static_cast<T>(value);
  } else {
    if (!std::isfinite(static_cast<T>(value))) {
      return invalid_argument(out_of_range_text(text, range) + " that a 32-bit float holds");
    }
    return static_cast<T>(value);
  }
}

}  // namespace opu
