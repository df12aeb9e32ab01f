// The SIGBUS handler and the registry of live mappings it consults.
//
// Any process can ftruncate a service file; touching a page of a MAP_SHARED
// mapping past the new end of file raises SIGBUS, whose default action kills
// the whole process. For a fault inside one of our mappings the handler maps
// an anonymous zero page over the faulting page (MAP_FIXED, same protection)
// and returns, so the access completes (reading zeros, or writing into a
// private page). The slot is flagged damaged and a process-wide counter goes
// up; JS compares that counter with the value it last saw (one load on the
// hot path) and refuses to use a damaged mapping.
//
// Only async-signal-safe work happens in the handler: lock-free atomic loads
// over a fixed array, mmap (a plain system call), sigaction and raise.
#include "sigbus.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#include "common.h"
#include "mapping.h"

namespace commy {
namespace {

// One slot per live mapping; each reserves maxFileSize of address space, so
// this bound is far above any sensible number of open service files.
constexpr int kSlots = 16384;

// `start` is stored last when a slot is filled and cleared first when it is
// emptied: the handler only trusts a slot whose start it sees non-zero.
struct Slot {
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<int> prot{0};
  std::atomic<bool> damaged{false};
};

static_assert(std::atomic<uintptr_t>::is_always_lock_free, "the handler needs lock-free atomics");
static_assert(std::atomic<int>::is_always_lock_free, "the handler needs lock-free atomics");
static_assert(std::atomic<bool>::is_always_lock_free, "the handler needs lock-free atomics");

Slot g_slots[kSlots];
std::atomic<int> g_used{0};  // slots [0, g_used) may be live: the handler's scan bound
bool g_taken[kSlots];        // guarded by g_mu; the handler never looks at it
std::mutex g_mu;             // register/unregister only, never the handler

// Process-wide count of repaired faults, read by JS through damageCount.
alignas(64) int32_t g_damage_count = 0;

uintptr_t g_page_size = 4096;
struct sigaction g_previous;  // the handler we replaced, for faults not ours
std::once_flag g_install_once;

// Maps a zero page over `addr` if it lies in a live slot; false otherwise.
bool Repair(uintptr_t addr) {
  const int used = g_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; i++) {
    Slot& s = g_slots[i];
    const uintptr_t start = s.start.load(std::memory_order_acquire);
    if (start == 0 || addr < start || addr >= s.end.load(std::memory_order_relaxed)) continue;
    void* page = reinterpret_cast<void*>(addr & ~(g_page_size - 1));
    void* got = mmap(page, g_page_size, s.prot.load(std::memory_order_relaxed),
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (got == MAP_FAILED) return false;
    s.damaged.store(true, std::memory_order_release);
    __atomic_fetch_add(&g_damage_count, 1, __ATOMIC_SEQ_CST);
    return true;
  }
  return false;
}

// A SIGBUS that is not ours: behave as if we had never been installed.
void Chain(int sig, siginfo_t* info, void* ucontext) {
  const bool fault = info != nullptr && info->si_code > 0;  // raised by the kernel for an access
  // sa_handler and sa_sigaction share storage: SIG_DFL/SIG_IGN are checked first whatever the flags say.
  const auto handler = g_previous.sa_handler;
  if (handler != SIG_DFL && handler != SIG_IGN) {
    if ((g_previous.sa_flags & SA_SIGINFO) != 0) g_previous.sa_sigaction(sig, info, ucontext);
    else handler(sig);
    return;
  }
  // Ignoring a fault would restart the faulting instruction forever: a fault
  // gets the default action whatever the previous disposition said.
  if (handler == SIG_IGN && !fault) return;
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  // A fault comes back by itself when the instruction restarts; a signal
  // sent with kill() does not, so send it again (delivered once we return).
  if (!fault) raise(sig);
}

void OnSigbus(int sig, siginfo_t* info, void* ucontext) {
  const int saved_errno = errno;
  const bool fault = info != nullptr && info->si_code > 0;
  if (fault && Repair(reinterpret_cast<uintptr_t>(info->si_addr))) {
    errno = saved_errno;
    return;
  }
  Chain(sig, info, ucontext);
  errno = saved_errno;
}

void Install() {
  g_page_size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  struct sigaction sa = {};
  sa.sa_sigaction = OnSigbus;
  sigemptyset(&sa.sa_mask);
  // SA_ONSTACK: use an alternate stack where a thread has one. No
  // SA_NODEFER: a SIGBUS inside the handler itself is a bug and must kill.
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigaction(SIGBUS, &sa, &g_previous);
}

Napi::Value Damaged(const Napi::CallbackInfo& info) {
  Mapping* m = GetMapping(info, 0);
  if (m == nullptr) return Napi::Value();
  return Napi::Boolean::New(info.Env(), SigbusRangeDamaged(m->sigbus_slot));
}

}  // namespace

int RegisterSigbusRange(void* addr, size_t length, bool writable) {
  std::lock_guard<std::mutex> lk(g_mu);
  for (int i = 0; i < kSlots; i++) {
    if (g_taken[i]) continue;
    g_taken[i] = true;
    Slot& s = g_slots[i];
    s.damaged.store(false, std::memory_order_relaxed);
    s.prot.store(PROT_READ | (writable ? PROT_WRITE : 0), std::memory_order_relaxed);
    s.end.store(reinterpret_cast<uintptr_t>(addr) + length, std::memory_order_relaxed);
    s.start.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    if (i >= g_used.load(std::memory_order_relaxed)) g_used.store(i + 1, std::memory_order_release);
    return i;
  }
  return -1;
}

void UnregisterSigbusRange(int slot) {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> lk(g_mu);
  g_slots[slot].start.store(0, std::memory_order_release);
  g_taken[slot] = false;
}

bool SigbusRangeDamaged(int slot) {
  if (slot < 0 || slot >= kSlots) return false;
  return g_slots[slot].damaged.load(std::memory_order_acquire);
}

void InitSigbus(Napi::Env env, Napi::Object exports) {
  std::call_once(g_install_once, Install);
  exports.Set("damaged", Napi::Function::New(env, Damaged, "damaged"));
  // Every env (main thread, workers) gets its own ArrayBuffer over the one
  // static word; nothing to free when it is collected.
  napi_value ab;
  if (napi_create_external_arraybuffer(env, &g_damage_count, sizeof g_damage_count,
                                       [](napi_env, void*, void*) {}, nullptr, &ab) != napi_ok) {
    if (!env.IsExceptionPending())
      ThrowError(env, "ERR_COMMY_SIGBUS", "could not expose the damage counter");
    return;
  }
  exports.Set("damageCount", Napi::Value(env, ab));
}

}  // namespace commy
