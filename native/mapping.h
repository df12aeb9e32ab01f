// Shared file mappings exposed to JS as external ArrayBuffers.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace commy {

struct WatchCore;

// One per map() call. Owned by the ArrayBuffer's finalizer; only touched on
// the JS thread of `env` (the global registry has its own lock because
// several envs/worker threads may map concurrently).
struct Mapping {
  void* addr = nullptr;
  size_t length = 0;
  bool writable = false;
  napi_env env = nullptr;
  // false once unmap() replaced the pages with a PROT_NONE reservation.
  bool live = true;
  // Set while napi_create_external_arraybuffer runs: Node may invoke the
  // finalizer synchronously when creation fails, and then must not free us.
  bool creating = false;
  bool finalized_while_creating = false;
  // Slot in the SIGBUS registry (sigbus.h) while the file pages are mapped.
  int sigbus_slot = -1;
  // Open watchers reading words of this mapping; closed before the pages go.
  std::vector<std::shared_ptr<WatchCore>> watchers;
};

// Resolves info[i] to a live mapping of this env. Throws and returns nullptr
// otherwise: TypeError if it is not a mapping at all, Error with code
// ERR_COMMY_CLOSED if it was unmapped.
Mapping* GetMapping(const Napi::CallbackInfo& info, size_t i);

// Reads info[i] as the byte offset of an int32 inside `m`: must be 4-aligned
// and offset + 4 <= length (RangeError otherwise).
bool GetWordOffset(const Napi::CallbackInfo& info, size_t i, const char* name,
                   const Mapping* m, size_t* out);

void InitMapping(Napi::Env env, Napi::Object exports);

}  // namespace commy
