// watch(): a native thread per watcher waits on a shared futex word and
// notifies JS through a thread-safe function. Change watchers use it only as
// their fallback (no watcher slot, or no socket): see wake.cc.
#include "watcher.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "common.h"
#include "env-data.h"
#include "futex.h"

namespace commy {

struct WatchCore;
void CallJs(Napi::Env env, Napi::Function cb, WatchCore* core, void* data);
using Tsfn = Napi::TypedThreadSafeFunction<WatchCore, void, CallJs>;

// State shared by the JS-facing Watcher object, the watcher thread, the
// mapping's watcher list and the TSFN. Fields marked "JS thread" are only
// touched on the env's JS thread.
struct WatchCore : std::enable_shared_from_this<WatchCore> {
  napi_env env = nullptr;
  int32_t* word = nullptr;
  int32_t* waiters = nullptr;
  double timeout_ms = -1;
  uint32_t bitset = 0xffffffffu;  // which wakes reach this watcher
  int32_t initial = 0;  // word value at watch(): first callback needs a change

  std::atomic<bool> stop{false};
  std::atomic<bool> pending{false};  // a JS call is queued and not yet started

  // Thread exit handshake: close() keeps waking the futex until this is set,
  // which closes the race where the thread checks `stop` just before sleeping.
  std::mutex mu;
  std::condition_variable cv;
  bool exited = false;

  // JS thread.
  bool closed = false;
  bool thread_started = false;
  bool tsfn_created = false;
  bool refed = false;
  bool hook_added = false;
  pthread_t thread{};
  Tsfn tsfn;
  Napi::Reference<Napi::ArrayBuffer> buffer;  // keeps the mapping alive
  Napi::ObjectReference self;  // an open watcher stays alive like a timer
  Mapping* mapping = nullptr;  // non-null iff listed in mapping->watchers

  void Close();
};

namespace {

void CleanupHook(void* arg) {
  WatchCore* core = static_cast<WatchCore*>(arg);
  core->hook_added = false;  // Node already removed it
  core->Close();
}

// A watcher with its own bit sets that bit in the `waiters` word (a mask of
// parked watchers, so writers can tell "only my own process is waiting" and
// skip the wake); one without (bitset = all) counts itself in it instead.
void Announce(WatchCore* c, bool parked) {
  if (c->bitset != kAllBits) {
    if (parked) __atomic_fetch_or(c->waiters, static_cast<int32_t>(c->bitset), __ATOMIC_SEQ_CST);
    else __atomic_fetch_and(c->waiters, ~static_cast<int32_t>(c->bitset), __ATOMIC_SEQ_CST);
  } else {
    __atomic_fetch_add(c->waiters, parked ? 1 : -1, __ATOMIC_SEQ_CST);
  }
}

void* ThreadMain(void* arg) {
  WatchCore* c = static_cast<WatchCore*>(arg);
  int32_t last = c->initial;
  while (!c->stop.load()) {
    // Announce ourselves before re-reading the word: a writer bumps the word
    // and then reads `waiters`, so either it sees us and wakes the futex, or
    // we see its bump here and do not sleep.
    Announce(c, true);
    int32_t cur = __atomic_load_n(c->word, __ATOMIC_SEQ_CST);
    if (cur == last && !c->stop.load()) {
      // The timeout is only a safety net against a missed wake.
      FutexWait(c->word, last, c->timeout_ms, c->bitset);
    }
    Announce(c, false);
    cur = __atomic_load_n(c->word, __ATOMIC_SEQ_CST);
    if (cur != last) {
      last = cur;
      // Coalesce: while a call is queued, further changes ride along with it.
      if (!c->pending.exchange(true) && c->tsfn.NonBlockingCall() != napi_ok) {
        c->pending.store(false);  // TSFN closing: env is going away
      }
    }
  }
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->exited = true;
  }
  c->cv.notify_all();
  return nullptr;
}

bool StartThread(WatchCore* core, int* err) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  // The loop needs almost no stack; keep many watchers cheap.
  pthread_attr_setstacksize(&attr, 256 * 1024);
  // Block all signals in the new thread so process signals keep going to
  // Node's threads (the mask is inherited at creation). Except SIGBUS: the
  // thread reads the mapping, and a fault there (file truncated by another
  // process) must reach the handler in sigbus.cc; a blocked fault kills.
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGBUS);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  *err = pthread_create(&core->thread, &attr, ThreadMain, core);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  if (*err != 0) return false;
  pthread_setname_np(core->thread, "commy-watch");
  return true;
}

class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Watcher",
                       {InstanceMethod<&Watcher::JsClose>("close"),
                        InstanceMethod<&Watcher::JsRef>("ref"),
                        InstanceMethod<&Watcher::JsUnref>("unref")});
  }

  explicit Watcher(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Watcher>(info) {}

  ~Watcher() override {
    // Normally already closed (an open watcher is strongly referenced);
    // this only matters for objects finalized at env teardown.
    if (core_) core_->Close();
  }

  std::shared_ptr<WatchCore> core_;  // null for objects built from JS

 private:
  Napi::Value JsClose(const Napi::CallbackInfo& info) {
    if (core_) core_->Close();
    return info.Env().Undefined();
  }
  // ref()/unref() return `this` like Node's timers and handles.
  Napi::Value JsRef(const Napi::CallbackInfo& info) {
    if (core_ && !core_->closed && !core_->refed) {
      core_->tsfn.Ref(info.Env());
      core_->refed = true;
    }
    return info.This();
  }
  Napi::Value JsUnref(const Napi::CallbackInfo& info) {
    if (core_ && !core_->closed && core_->refed) {
      core_->tsfn.Unref(info.Env());
      core_->refed = false;
    }
    return info.This();
  }
};

Napi::Value Watch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mapping* m = GetMapping(info, 0);
  if (m == nullptr) return Napi::Value();
  size_t word_off, waiters_off;
  double timeout;
  if (!GetWordOffset(info, 1, "wordOffset", m, &word_off)) return Napi::Value();
  if (!GetWordOffset(info, 2, "waitersOffset", m, &waiters_off))
    return Napi::Value();
  if (word_off == waiters_off) {
    ThrowRange(env, "ERR_OUT_OF_RANGE",
               "wordOffset and waitersOffset must be different words");
    return Napi::Value();
  }
  if (!GetTimeout(info, 3, "timeoutMs", &timeout)) return Napi::Value();
  if (!info[4].IsFunction()) {
    ThrowType(env, "ERR_INVALID_ARG_TYPE",
              "The \"callback\" argument must be a function");
    return Napi::Value();
  }
  uint32_t bitset;
  if (!GetBitset(info, 5, &bitset)) return Napi::Value();
  // The thread increments `waiters`; on a read-only mapping that would fault.
  if (!m->writable) {
    ThrowError(env, "ERR_COMMY_READONLY",
               "watch() needs a writable mapping (it updates the waiters word)");
    return Napi::Value();
  }

  auto core = std::make_shared<WatchCore>();
  char* base = static_cast<char*>(m->addr);
  core->env = env;
  core->word = reinterpret_cast<int32_t*>(base + word_off);
  core->waiters = reinterpret_cast<int32_t*>(base + waiters_off);
  // A zero timeout would turn the safety net into a busy loop.
  core->timeout_ms = (timeout >= 0 && timeout < 1) ? 1 : timeout;
  core->bitset = bitset;
  core->initial = __atomic_load_n(core->word, __ATOMIC_SEQ_CST);

  Napi::Object obj = GetEnvData(env)->watcher_ctor.New({});
  if (env.IsExceptionPending()) return Napi::Value();
  Watcher::Unwrap(obj)->core_ = core;

  // The TSFN finalizer owns one reference so the context outlives any
  // queued call, whatever order Node tears things down in.
  auto* holder = new std::shared_ptr<WatchCore>(core);
  core->tsfn = Tsfn::New(
      env, info[4].As<Napi::Function>(), "commy:watch", 0, 1, core.get(),
      [](Napi::Env, std::shared_ptr<WatchCore>* h, WatchCore*) { delete h; },
      holder);
  if (env.IsExceptionPending()) {
    delete holder;  // node-addon-api frees only its own wrapper on failure
    return Napi::Value();
  }
  core->tsfn_created = true;
  core->tsfn.Unref(env);  // start unref'd: a watcher alone must not keep Node alive

  core->buffer = Napi::Persistent(info[0].As<Napi::ArrayBuffer>());
  core->self = Napi::Persistent(obj);
  core->mapping = m;
  m->watchers.push_back(core);
  // Stops the thread at env teardown (exit or worker termination) before
  // the TSFN and the mapping are torn down.
  if (napi_add_env_cleanup_hook(env, CleanupHook, core.get()) == napi_ok)
    core->hook_added = true;

  int err = 0;
  if (!StartThread(core.get(), &err)) {
    core->Close();
    ThrowErrno(env, "ERR_COMMY_THREAD", "pthread_create", err);
    return Napi::Value();
  }
  core->thread_started = true;
  return obj;
}

}  // namespace

void CallJs(Napi::Env env, Napi::Function cb, WatchCore* core, void*) {
  // env is null when the TSFN is drained during teardown.
  if (env == nullptr || core == nullptr || core->closed) return;
  // Clear before calling so changes made during the callback queue another.
  core->pending.store(false);
  // The raw call, not cb.Call(): when the process exits with a notice still
  // queued, Node drains it while JS can no longer run, and node-addon-api
  // would turn that failed call into a fatal napi_throw (SIGABRT). Then the
  // notice is simply dropped: nobody is left to hear it.
  napi_value recv, result;
  if (napi_get_undefined(env, &recv) != napi_ok) return;
  napi_status st = napi_call_function(env, recv, cb, 0, nullptr, &result);
  if (st != napi_pending_exception) return;
  // The callback threw. Without this Node (NAPI_VERSION < experimental) only
  // prints a deprecation warning and drops the error; report it like any
  // other uncaught exception instead.
  napi_value err;
  if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
}

void WatchCore::Close() {
  if (closed) return;
  auto keep = shared_from_this();  // dropping list entries below may free us
  closed = true;
  stop.store(true);
  if (thread_started) {
    std::unique_lock<std::mutex> lk(mu);
    while (!exited) {
      // Wakes the waiters that share this watcher's bit (its own thread, and
      // only those other watchers without a slot of their own). Repeated because
      // the thread may check `stop` just before entering futex_wait.
      lk.unlock();
      FutexWake(word, INT_MAX, bitset);
      lk.lock();
      cv.wait_for(lk, std::chrono::milliseconds(1), [this] { return exited; });
    }
    lk.unlock();
    pthread_join(thread, nullptr);
    thread_started = false;
  }
  if (tsfn_created) {
    tsfn.Release();
    tsfn_created = false;
  }
  buffer.Reset();
  self.Reset();
  if (mapping != nullptr) {
    auto& list = mapping->watchers;
    list.erase(std::remove(list.begin(), list.end(), keep), list.end());
    mapping = nullptr;
  }
  if (hook_added) {
    napi_remove_env_cleanup_hook(env, CleanupHook, this);
    hook_added = false;
  }
}

void CloseWatchers(Mapping* m) {
  // Close() edits m->watchers, so work on a copy.
  auto list = m->watchers;
  for (auto& w : list) w->Close();
  m->watchers.clear();
}

void InitWatcher(Napi::Env env, Napi::Object exports) {
  GetEnvData(env)->watcher_ctor = Napi::Persistent(Watcher::Define(env));
  exports.Set("watch", Napi::Function::New(env, Watch, "watch"));
}

}  // namespace commy
