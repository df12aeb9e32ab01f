// Wake channels (docs/file-format.md, Change notification): a watcher that
// owns a watcher slot sleeps on an abstract AF_UNIX datagram socket polled by
// its own event loop, and a writer wakes it with one byte. A change reaches
// the watcher's JS in one hop: no thread, no cross-thread hand-off.
#pragma once

#include <napi.h>

namespace commy {

void InitWake(Napi::Env env, Napi::Object exports);

}  // namespace commy
