// SIGBUS survival: a service file that another process truncates must not
// kill this process (a server maps many tenants' files). A fault inside one
// of our live mappings gets an anonymous zero page mapped over the faulting
// page, the mapping is flagged damaged, and the instruction restarts. Every
// other SIGBUS goes to the previous handler (or the default action).
#pragma once

#include <napi.h>

#include <cstddef>

namespace commy {

// Registers [addr, addr + length) as a live mapping (async-signal-safe
// registry). Returns its slot, or -1 when the registry is full.
int RegisterSigbusRange(void* addr, size_t length, bool writable);

// Forgets a slot (before the pages go). No-op for -1.
void UnregisterSigbusRange(int slot);

// Has a fault been repaired inside this slot's range?
bool SigbusRangeDamaged(int slot);

// Installs the handler (once per process) and exports `damaged(buffer)` and
// `damageCount` (an ArrayBuffer over the process-wide count of repairs).
void InitSigbus(Napi::Env env, Napi::Object exports);

}  // namespace commy
