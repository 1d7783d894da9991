// opu-train --model transformer: the character-level Transformer language model (docs/trainer.md,
// "The Transformer"), trained by steps on the graph engine with BP, DFA (macro or micro feedback
// points, digital or device feedback) or shallow learning.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>

#include "config.h"
#include "opu_sim/status.h"

namespace opu::trainer::app {

/// Trains as `options` say (finalize()d, model "transformer"). People get one line per
/// evaluation on `out` (and a progress bar on `err` when `progress_bar`), the generated sample
/// with --sample, a summary table; the last line written to `out` is one JSON object (the
/// returned summary: val_loss, best_val_loss, val_perplexity, tokens_per_s, method, feedback,
/// steps, ...; with "error" on failure).
Result<nlohmann::json> run_transformer(Options options, std::ostream& out, std::ostream& err,
                                       bool progress_bar);

}  // namespace opu::trainer::app
