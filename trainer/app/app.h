// opu-train as a function: load the data, build the model, the feedback source and the optimiser,
// train, report. main() only parses flags and owns the log sinks.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>

#include "config.h"
#include "opu_sim/status.h"

namespace opu::trainer::app {

/// Trains as `options` say. People get one line per epoch on `out` (and a progress bar on `err`
/// when `progress_bar`), then a summary table; the last line written to `out` is one JSON object
/// (the returned summary: test_accuracy, method, feedback, epochs, ...; with "error" on failure).
Result<nlohmann::json> run_training(Options options, std::ostream& out, std::ostream& err,
                                    bool progress_bar);

}  // namespace opu::trainer::app
