// CLI11 validators made from ValueRange (opu_sim/value_range.h), so that a flag is checked with the
// same range and the same words as the JSON configs of the same executable:
//
//   app.add_option("--threads", threads, "...")->check(opu::in_range<int>(kThreadsRange));
//   --threads: 0 is out of range; expected an integer in [1, 1024]
//
// Header-only; include it from executables that link CLI11 (the simulator library does not).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "opu_sim/value_range.h"

namespace opu {

/// Accepts a T within `range`, refusing anything else with "VALUE is out of range; expected ..."
/// (CLI11 prefixes the flag's name). An integer written out another way ("1e3") is rewritten to
/// its digits, so that CLI11's own conversion reads the value that was checked.
template <typename T>
CLI::Validator in_range(ValueRange range) {
  std::string words = range.expected();
  return CLI::Validator(
      [range = std::move(range)](std::string& text) -> std::string {
        const Result<T> parsed = parse_in_range<T>(text, range);
        if (!parsed.ok()) return parsed.status().message();
        if constexpr (std::is_integral_v<T>) text = std::to_string(*parsed);
        return {};
      },
      std::move(words));
}

/// Accepts one of `choices`: "'VALUE' is not a known value; expected one of A, B, C".
inline CLI::Validator one_of(std::vector<std::string> choices) {
  std::string words;
  for (const std::string& choice : choices) words += (words.empty() ? "" : ", ") + choice;
  return CLI::Validator(
      [choices = std::move(choices)](std::string& text) -> std::string {
        for (const std::string& choice : choices) {
          if (text == choice) return {};
        }
        return not_one_of_text(text, choices);
      },
      "one of " + words);
}

}  // namespace opu
