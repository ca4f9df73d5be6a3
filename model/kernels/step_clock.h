// Time spent inside the extension's primitives, by kind, for `glasschat bench`'s split of a
// decode step (matvec kernel, attention, the fused small ops). Off unless asked for: then
// each evaluation reads the clock twice (~50 ns).

#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace glasschat {

enum class Stage { matvec = 0, attention = 1, fused = 2 };
constexpr int kStages = 3;

struct StageTotals {
  std::array<std::atomic<int64_t>, kStages> ns{};
  std::array<std::atomic<int64_t>, kStages> calls{};
  std::atomic<bool> on{false};
};

StageTotals& stage_totals();

// Adds the time from construction to destruction to `stage`, when timing is on.
class StageTimer {
 public:
  explicit StageTimer(Stage stage) : stage_(stage), on_(stage_totals().on.load(std::memory_order_relaxed)) {
    if (on_) {
      start_ = std::chrono::steady_clock::now();
    }
  }
  ~StageTimer() {
    if (on_) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_);
      auto& totals = stage_totals();
      totals.ns[int(stage_)].fetch_add(ns.count(), std::memory_order_relaxed);
      totals.calls[int(stage_)].fetch_add(1, std::memory_order_relaxed);
    }
  }

 private:
  Stage stage_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace glasschat
