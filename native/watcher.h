// Futex watchers: one native thread per watcher sleeping on a futex word of
// a mapping and calling back into JS (coalesced) when the word changes. The
// fallback of a change watcher that has no wake channel (wake.h).
#pragma once

#include <napi.h>

#include "mapping.h"

namespace commy {

// Stops and joins every watcher of `m` (JS thread only). Used by unmap() and
// by the mapping finalizer before the pages disappear.
void CloseWatchers(Mapping* m);

void InitWatcher(Napi::Env env, Napi::Object exports);

}  // namespace commy
