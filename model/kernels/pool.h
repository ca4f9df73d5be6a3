// One small pool of worker threads shared by every kernel in the extension.
//
// A decode step makes ~150 calls into the extension, each tens of microseconds,
// so handing out work must cost far less than that. Workers spin on a generation
// counter for a few tens of microseconds (the next call usually comes within
// that), then sleep on it (C++20 atomic wait: a futex on Linux), so an idle model
// costs no CPU. Two pools would spin against each other on a small machine, so
// the matvec and attention kernels share this one.

#pragma once

namespace glasschat {

// Calls task(context, i) for every i in [0, tasks) on up to `threads` threads (the
// caller's included) and returns when all are done. Tasks are handed out one at a
// time from a counter, so uneven tasks (causal attention) balance themselves.
using TaskFn = void (*)(void* context, int task);
void parallel_for(int tasks, int threads, TaskFn task, void* context);

// The same with any callable: parallel_for(n, threads, [&](int i) { ... }).
template <class F>
void parallel_for(int tasks, int threads, F&& f) {
  parallel_for(
      tasks, threads, [](void* c, int i) { (*static_cast<F*>(c))(i); }, static_cast<void*>(&f));
}

}  // namespace glasschat
