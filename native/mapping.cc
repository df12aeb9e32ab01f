// map / unmap / msync: MAP_SHARED file mappings handed to JS as external
// ArrayBuffers.
#include "mapping.h"

#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>

#include "common.h"
#include "sigbus.h"
#include "watcher.h"

namespace commy {
namespace {

// Marks ArrayBuffers created by map(): after detach their data pointer is
// gone, and the tag is how unmap()/futex* still recognise them as ours.
const napi_type_tag kMappingTag = {0x636f6d6d795f6d61ULL, 0x7070696e675f7631ULL};

// data pointer -> Mapping. Invariant: every key is an address range that is
// still mapped (live pages or the PROT_NONE reservation), so mmap can never
// hand out a colliding address while an entry exists.
struct Registry {
  std::mutex mu;
  std::unordered_map<void*, Mapping*> by_addr;
};

Registry& Reg() {
  // Leaked on purpose: no static destructor racing with process exit().
  static Registry* r = new Registry;
  return *r;
}

void Unregister(Mapping* m) {
  std::lock_guard<std::mutex> lk(Reg().mu);
  Reg().by_addr.erase(m->addr);
}

bool IsTagged(napi_env env, napi_value v) {
  bool tagged = false;
  if (napi_check_object_type_tag(env, v, &kMappingTag, &tagged) != napi_ok)
    return false;
  return tagged;
}

// Runs on the JS thread once V8 has dropped the backing store (GC, or right
// after detach), or at env teardown. Only now may the address be reused.
void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  if (m->creating) {  // failed creation: Map() cleans up
    m->finalized_while_creating = true;
    return;
  }
  // Watcher threads read the mapped words: stop them before the pages go.
  CloseWatchers(m);
  if (m->live) Unregister(m);
  UnregisterSigbusRange(m->sigbus_slot);
  munmap(m->addr, m->length);
  delete m;
}

// Node refuses larger external buffers (and then runs the finalizer at once):
// 2^32 bytes before v22, 2^53 - 1 from v22 on (buffer.constants.MAX_LENGTH).
uint64_t MaxBufferLength(napi_env env) {
  const napi_node_version* v = nullptr;
  if (napi_get_node_version(env, &v) == napi_ok && v != nullptr &&
      v->major < 22)
    return 1ULL << 32;
  return (1ULL << 53) - 1;
}

// Looks up a non-detached ArrayBuffer; nullptr if it is not one of ours.
Mapping* Find(napi_env env, void* data, size_t length) {
  if (data == nullptr) return nullptr;
  std::lock_guard<std::mutex> lk(Reg().mu);
  auto it = Reg().by_addr.find(data);
  if (it == Reg().by_addr.end()) return nullptr;
  Mapping* m = it->second;
  // Another env's mapping (e.g. a transferred buffer) is not ours to touch.
  if (m->env != env || m->length != length) return nullptr;
  return m;
}

Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t fd, length;
  bool writable;
  if (!GetIndex(info, 0, "fd", INT32_MAX, &fd)) return Napi::Value();
  if (!GetIndex(info, 1, "length", (1ULL << 53) - 1, &length))
    return Napi::Value();
  if (length == 0 || length > MaxBufferLength(env)) {
    ThrowRange(env, "ERR_OUT_OF_RANGE",
               "The \"length\" argument must be > 0 and <= " +
                   std::to_string(MaxBufferLength(env)) +
                   " (buffer.constants.MAX_LENGTH)");
    return Napi::Value();
  }
  if (!GetBool(info, 2, "writable", &writable)) return Napi::Value();

  void* addr = mmap(nullptr, length, PROT_READ | (writable ? PROT_WRITE : 0),
                    MAP_SHARED, static_cast<int>(fd), 0);
  if (addr == MAP_FAILED) {
    ThrowErrno(env, "ERR_COMMY_MMAP", "mmap", errno);
    return Napi::Value();
  }

  // A fault past end of file (another process truncated it) must be survivable.
  const int slot = RegisterSigbusRange(addr, length, writable);
  if (slot < 0) {
    munmap(addr, length);
    ThrowError(env, "ERR_COMMY_MMAP", "too many live mappings in this process");
    return Napi::Value();
  }

  Mapping* m = new Mapping;
  m->addr = addr;
  m->length = length;
  m->writable = writable;
  m->env = env;
  m->sigbus_slot = slot;

  napi_value ab;
  m->creating = true;
  napi_status st = napi_create_external_arraybuffer(env, addr, length,
                                                    FinalizeMapping, m, &ab);
  m->creating = false;
  if (st != napi_ok) {
    UnregisterSigbusRange(slot);
    m->sigbus_slot = -1;
    if (m->finalized_while_creating) {
      // Node already ran (and is done with) the finalizer: release here.
      munmap(addr, length);
      delete m;
    } else {
      // Node may still run the finalizer later, or never. Drop the file
      // pages but keep the range reserved and `m` alive, so a late finalizer
      // only ever unmaps our own reservation (worst case: a small leak).
      m->live = false;
      mmap(addr, length, PROT_NONE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    }
    if (!env.IsExceptionPending())
      ThrowError(env, "ERR_COMMY_MMAP",
                 "could not create an ArrayBuffer over the mapping");
    return Napi::Value();
  }
  napi_type_tag_object(env, ab, &kMappingTag);
  {
    std::lock_guard<std::mutex> lk(Reg().mu);
    Reg().by_addr[addr] = m;
  }
  return Napi::Value(env, ab);
}

Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) {
    ThrowType(env, "ERR_INVALID_ARG_TYPE",
              "The \"buf\" argument must be an ArrayBuffer returned by map()");
    return Napi::Value();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  Mapping* m = Find(env, ab.Data(), ab.ByteLength());
  if (m == nullptr) {
    // Already unmapped (detached, still tagged): unmap is idempotent.
    if (ab.Data() == nullptr && IsTagged(env, ab)) return env.Undefined();
    ThrowType(env, "ERR_INVALID_ARG_VALUE",
              "The \"buf\" argument is not an ArrayBuffer returned by map()");
    return Napi::Value();
  }

  CloseWatchers(m);

  // Every JS view over the buffer becomes length 0, so JS can no longer
  // reach the pages we are about to drop.
  napi_status st = napi_detach_arraybuffer(env, ab);
  if (st != napi_ok) {
    if (!env.IsExceptionPending())
      ThrowError(env, "ERR_COMMY_MMAP", "could not detach the ArrayBuffer");
    return Napi::Value();
  }

  Unregister(m);
  m->live = false;
  UnregisterSigbusRange(m->sigbus_slot);
  m->sigbus_slot = -1;
  // Drop the file pages now but keep the address range reserved until the
  // finalizer: V8 tracks backing stores by address until the detached buffer
  // is collected, and an immediate re-map at the same address would abort the
  // process ("Check failed: result.second", nodejs/node#32463). If this
  // fails the file mapping simply lingers, unreachable, until the finalizer.
  mmap(m->addr, m->length, PROT_NONE,
       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  return env.Undefined();
}

Napi::Value Msync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mapping* m = GetMapping(info, 0);
  if (m == nullptr) return Napi::Value();
  uint64_t offset, length;
  bool sync;
  if (!GetIndex(info, 1, "offset", m->length, &offset)) return Napi::Value();
  if (!GetIndex(info, 2, "length", m->length, &length)) return Napi::Value();
  if (offset + length > m->length) {
    ThrowRange(env, "ERR_OUT_OF_RANGE",
               "offset + length exceeds the mapping length");
    return Napi::Value();
  }
  if (!GetBool(info, 3, "sync", &sync)) return Napi::Value();

  // msync requires a page-aligned start address.
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t start = offset & ~(page - 1);
  if (msync(static_cast<char*>(m->addr) + start, length + (offset - start),
            sync ? MS_SYNC : MS_ASYNC) != 0) {
    ThrowErrno(env, "ERR_COMMY_MSYNC", "msync", errno);
    return Napi::Value();
  }
  return env.Undefined();
}

}  // namespace

Mapping* GetMapping(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  if (!info[i].IsArrayBuffer()) {
    ThrowType(env, "ERR_INVALID_ARG_TYPE",
              "The \"buf\" argument must be an ArrayBuffer returned by map()");
    return nullptr;
  }
  Napi::ArrayBuffer ab = info[i].As<Napi::ArrayBuffer>();
  Mapping* m = Find(env, ab.Data(), ab.ByteLength());
  if (m != nullptr) return m;
  if (ab.Data() == nullptr && IsTagged(env, ab)) {
    ThrowError(env, "ERR_COMMY_CLOSED", "The mapping has been unmapped");
  } else {
    ThrowType(env, "ERR_INVALID_ARG_VALUE",
              "The \"buf\" argument is not an ArrayBuffer returned by map()");
  }
  return nullptr;
}

bool GetWordOffset(const Napi::CallbackInfo& info, size_t i, const char* name,
                   const Mapping* m, size_t* out) {
  uint64_t off;
  if (!GetIndex(info, i, name, (1ULL << 53) - 1, &off)) return false;
  if (off % 4 != 0 || m->length < 4 || off > m->length - 4) {
    ThrowRange(info.Env(), "ERR_OUT_OF_RANGE",
               std::string("The \"") + name +
                   "\" argument must be a multiple of 4 with offset + 4 <= " +
                   std::to_string(m->length));
    return false;
  }
  *out = static_cast<size_t>(off);
  return true;
}

void InitMapping(Napi::Env env, Napi::Object exports) {
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("msync", Napi::Function::New(env, Msync, "msync"));
}

}  // namespace commy
