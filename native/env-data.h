// Per-environment state of the addon (main thread and each worker have one):
// Node gives an addon a single instance-data slot per env, so every file that
// needs per-env state keeps it here.
#pragma once

#include <napi.h>
#include <unistd.h>

namespace commy {

struct EnvData {
  Napi::FunctionReference watcher_ctor;
  Napi::FunctionReference channel_ctor;
  // The unbound datagram socket this env's writers send wake bytes from
  // (wake.cc), made on first use. Per env rather than per process: each env
  // sends only from its own JS thread (no lock), and the socket is closed
  // with the env (a terminated worker leaks no descriptor).
  int sender = -1;

  ~EnvData() {
    if (sender >= 0) close(sender);
  }
};

inline EnvData* GetEnvData(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

}  // namespace commy
