// Module registration for commy_native; each concept lives in its own file.
#include <napi.h>

#include "diff.h"
#include "env-data.h"
#include "futex.h"
#include "mapping.h"
#include "sigbus.h"
#include "wake.h"
#include "watcher.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Before the Init* calls below: they keep their per-env state in it.
  env.SetInstanceData(new commy::EnvData);
  commy::InitSigbus(env, exports);
  commy::InitMapping(env, exports);
  commy::InitFutex(env, exports);
  commy::InitWatcher(env, exports);
  commy::InitWake(env, exports);
  commy::InitDiff(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(commy_native, Init)
