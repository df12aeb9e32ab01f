// wakeChannel() / wakeChannels(): the reader and writer sides of a wake
// channel. The reader binds a datagram socket to "\0commy-w-<token>" (an
// abstract address: nothing in the file system, gone with the socket),
// publishes the token in the file's header and polls the socket with
// uv_poll on its env's own loop; a writer reads the token from the header
// and sends one byte there. The protocol around it (PARKED bits, ordering)
// is in src/local/change-watcher.ts and src/local/wake-up.ts.
#include "wake.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <string>

#include "common.h"
#include "env-data.h"
#include "mapping.h"

namespace commy {
namespace {

// Watcher slots: wakeChannels() reads one token per bit of a 32-bit mask.
constexpr size_t kSlotCount = 32;
// Datagrams read per readable event at most. Anyone on the host may send to
// an abstract address, so a flood must not hold the event loop; what is left
// is read on the next turn (uv_poll is level-triggered).
constexpr int kMaxDrain = 64;

// Both sides build the address here, and only here. The fixed prefix is the
// point: whatever a scribbled header holds, a writer only ever sends to
// sockets named like commy's own, and at most one byte per parked bit.
socklen_t ChannelAddress(uint64_t token, sockaddr_un* addr) {
  addr->sun_family = AF_UNIX;
  addr->sun_path[0] = '\0';
  const int n = snprintf(addr->sun_path + 1, sizeof(addr->sun_path) - 1,
                         "commy-w-%016" PRIx64, token);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

class WakeChannel;

// The native side of an open channel. Freed by OnClosed, once libuv is done
// with the poll handle: never while a callback of it is on the stack.
struct Channel {
  napi_env env = nullptr;
  uv_poll_t poll{};
  int fd = -1;
  napi_ref callback = nullptr;
  napi_ref self = nullptr;  // strong while open: an open channel lives on like a handle
  napi_async_context async = nullptr;
  napi_async_cleanup_hook_handle hook = nullptr;
  WakeChannel* wrap = nullptr;  // the JS object's side, until either goes
  bool closing = false;
  bool refed = false;
};

void CloseChannel(Channel* ch);

class WakeChannel : public Napi::ObjectWrap<WakeChannel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "WakeChannel",
                       {InstanceMethod<&WakeChannel::JsClose>("close"),
                        InstanceMethod<&WakeChannel::JsRef>("ref"),
                        InstanceMethod<&WakeChannel::JsUnref>("unref")});
  }

  explicit WakeChannel(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<WakeChannel>(info) {}

  // An open channel is strongly referenced, so this only closes one at env
  // teardown (if the cleanup hook has not already).
  ~WakeChannel() override {
    if (ch != nullptr) CloseChannel(ch);
  }

  Channel* ch = nullptr;  // null once closed, and for objects built from JS

 private:
  Napi::Value JsClose(const Napi::CallbackInfo& info) {
    if (ch != nullptr) CloseChannel(ch);
    return info.Env().Undefined();
  }
  // ref()/unref() return `this` like Node's timers and handles.
  Napi::Value JsRef(const Napi::CallbackInfo& info) {
    if (ch != nullptr && !ch->refed) {
      uv_ref(reinterpret_cast<uv_handle_t*>(&ch->poll));
      ch->refed = true;
    }
    return info.This();
  }
  Napi::Value JsUnref(const Napi::CallbackInfo& info) {
    if (ch != nullptr && ch->refed) {
      uv_unref(reinterpret_cast<uv_handle_t*>(&ch->poll));
      ch->refed = false;
    }
    return info.This();
  }
};

void OnClosed(uv_handle_t* handle) {
  Channel* ch = static_cast<Channel*>(handle->data);
  // Lets the env's teardown go on if it is waiting for us (TeardownHook);
  // otherwise just unregisters the hook.
  if (ch->hook != nullptr) napi_remove_async_cleanup_hook(ch->hook);
  delete ch;
}

void CloseChannel(Channel* ch) {
  if (ch->closing) return;
  ch->closing = true;
  if (ch->wrap != nullptr) ch->wrap->ch = nullptr;
  ch->wrap = nullptr;
  if (ch->callback != nullptr) napi_delete_reference(ch->env, ch->callback);
  if (ch->self != nullptr) napi_delete_reference(ch->env, ch->self);
  if (ch->async != nullptr) napi_async_destroy(ch->env, ch->async);
  ch->callback = ch->self = nullptr;
  ch->async = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&ch->poll), OnClosed);
  // uv_close has stopped the poll already, so the socket may go now: its
  // address is free again when close() returns, not a loop turn later.
  ::close(ch->fd);
  ch->fd = -1;
}

// Env teardown (process end, worker termination): close, and let Node wait
// for the handle's close callback before it closes the loop. An async hook:
// Node then runs the loop until OnClosed removes it, so a worker's loop is
// never closed with our handle still in it (with a plain hook that would
// depend on the loop happening to turn once more, as it does in Node 20).
void TeardownHook(napi_async_cleanup_hook_handle /*handle*/, void* arg) {
  CloseChannel(static_cast<Channel*>(arg));
}

// Reads what is queued, up to kMaxDrain datagrams, in one system call (a
// wake usually finds exactly one byte: recv-until-EAGAIN would cost two).
// The bytes mean nothing: each is cut to one byte and dropped.
void Drain(int fd) {
  mmsghdr msgs[kMaxDrain];
  iovec iovs[kMaxDrain];
  char bytes[kMaxDrain];
  for (int i = 0; i < kMaxDrain; i++) {
    iovs[i] = {&bytes[i], 1};
    msgs[i] = {};
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  while (recvmmsg(fd, msgs, kMaxDrain, MSG_DONTWAIT, nullptr) < 0 && errno == EINTR) {
  }
}

// The callback threw: an uncaught exception, like one thrown by any other
// event source (without this Node would only print a warning and drop it).
void ReportUncaught(napi_env env) {
  napi_value err;
  if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
}

void CallJs(Channel* ch) {
  napi_env env = ch->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value recv = nullptr, cb = nullptr, result;
  if (napi_get_reference_value(env, ch->self, &recv) == napi_ok &&
      napi_get_reference_value(env, ch->callback, &cb) == napi_ok &&
      recv != nullptr && cb != nullptr) {
    // napi_make_callback rather than a plain call: as after any Node event,
    // microtasks run when the callback returns (a promise a listener resolved
    // settles now), and async hooks see this channel as the context.
    napi_status st = napi_make_callback(env, ch->async, recv, cb, 0, nullptr, &result);
    if (st == napi_pending_exception) ReportUncaught(env);
  }
  napi_close_handle_scope(env, scope);
}

void OnReadable(uv_poll_t* poll, int status, int /*events*/) {
  Channel* ch = static_cast<Channel*>(poll->data);
  if (ch->closing) return;
  // A broken socket (never seen in practice): stop polling it. The watcher's
  // safety-net rescan still notices changes, a second late at worst.
  if (status < 0) uv_poll_stop(poll);
  else Drain(ch->fd);
  CallJs(ch);
}

// A non-blocking datagram socket bound to the address of `token`; -errno on
// failure (EADDRINUSE: someone else holds that address), with `syscall` set.
int BindChannel(uint64_t token, const char** syscall) {
  *syscall = "socket";
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_un addr;
  const socklen_t len = ChannelAddress(token, &addr);
  *syscall = "bind";
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    const int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

// One byte to the channel of `token`, from this env's sender socket. Failure
// is normal and ignored: ECONNREFUSED is a reader that is gone (its bit,
// taken now, goes with it); a second EAGAIN, from a fresh socket, is a reader
// whose queue is full, so it is readable and wakes anyway.
bool SendWake(EnvData* d, uint64_t token) {
  sockaddr_un addr;
  const socklen_t len = ChannelAddress(token, &addr);
  for (int attempt = 0; attempt < 2; attempt++) {
    if (d->sender < 0) d->sender = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (d->sender < 0) return false;
    ssize_t r;
    do {
      r = sendto(d->sender, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                 reinterpret_cast<sockaddr*>(&addr), len);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) return true;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    // The first EAGAIN may be our own send buffer, which counts every byte
    // still queued at a reader that does not read (stopped, its loop blocked:
    // one byte each at most, as a reader gets no second byte before it parks
    // again). A fresh socket starts empty; the old one is freed by the kernel
    // once those readers read or close.
    ::close(d->sender);
    d->sender = -1;
  }
  return false;
}

// info[i]: the byte offset of `count` consecutive u64 words inside `m`.
bool GetU64Offset(const Napi::CallbackInfo& info, size_t i, const char* name,
                  const Mapping* m, size_t count, size_t* out) {
  uint64_t off;
  if (!GetIndex(info, i, name, (1ULL << 53) - 1, &off)) return false;
  const uint64_t bytes = 8 * count;
  if (off % 8 != 0 || m->length < bytes || off > m->length - bytes) {
    ThrowRange(info.Env(), "ERR_OUT_OF_RANGE",
               std::string("The \"") + name + "\" argument must be a multiple of 8 with offset + " +
                   std::to_string(bytes) + " <= " + std::to_string(m->length));
    return false;
  }
  *out = static_cast<size_t>(off);
  return true;
}

bool GetToken(const Napi::CallbackInfo& info, size_t i, uint64_t* out) {
  bool lossless = false;
  if (!info[i].IsBigInt() ||
      napi_get_value_bigint_uint64(info.Env(), info[i], out, &lossless) != napi_ok ||
      !lossless || *out == 0) {
    ThrowRange(info.Env(), "ERR_OUT_OF_RANGE",
               "The \"token\" argument must be a bigint in [1, 2^64)");
    return false;
  }
  return true;
}

// A 32-bit mask given as an int32 or a uint32 (JS bit operations give int32).
bool GetMask(const Napi::CallbackInfo& info, size_t i, uint32_t* out) {
  if (!info[i].IsNumber()) {
    ThrowType(info.Env(), "ERR_INVALID_ARG_TYPE", "The \"bits\" argument must be a number");
    return false;
  }
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= -2147483648.0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<int64_t>(d))) {
    ThrowRange(info.Env(), "ERR_OUT_OF_RANGE", "The \"bits\" argument must be an int32 or uint32");
    return false;
  }
  *out = static_cast<uint32_t>(static_cast<int64_t>(d));
  return true;
}

// Everything after the socket is bound: the poll handle, the JS object, the
// references, the teardown hook. Returns the object, or empty after throwing.
Napi::Value StartChannel(Napi::Env env, int fd, Napi::Function callback) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    ::close(fd);
    ThrowError(env, "ERR_COMMY_WAKE", "no event loop to poll the wake channel on");
    return Napi::Value();
  }
  auto* ch = new Channel;
  ch->env = env;
  ch->fd = fd;
  int err = uv_poll_init(loop, &ch->poll, fd);
  if (err != 0) {
    ::close(fd);
    delete ch;
    ThrowErrno(env, "ERR_COMMY_WAKE", "uv_poll_init", -err);
    return Napi::Value();
  }
  ch->poll.data = ch;
  // Unref'd from the start: a watcher alone must not keep Node alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(&ch->poll));
  // From here on CloseChannel undoes whatever was done.
  Napi::Object obj = GetEnvData(env)->channel_ctor.New({});
  if (env.IsExceptionPending()) {
    CloseChannel(ch);
    return Napi::Value();
  }
  WakeChannel::Unwrap(obj)->ch = ch;
  ch->wrap = WakeChannel::Unwrap(obj);
  napi_value name = Napi::String::New(env, "commy:wake");
  if (napi_create_reference(env, obj, 1, &ch->self) != napi_ok ||
      napi_create_reference(env, callback, 1, &ch->callback) != napi_ok ||
      napi_async_init(env, nullptr, name, &ch->async) != napi_ok ||
      napi_add_async_cleanup_hook(env, TeardownHook, ch, &ch->hook) != napi_ok) {
    CloseChannel(ch);
    if (!env.IsExceptionPending()) ThrowError(env, "ERR_COMMY_WAKE", "could not set up the wake channel");
    return Napi::Value();
  }
  err = uv_poll_start(&ch->poll, UV_READABLE, OnReadable);
  if (err != 0) {
    CloseChannel(ch);
    ThrowErrno(env, "ERR_COMMY_WAKE", "uv_poll_start", -err);
    return Napi::Value();
  }
  return obj;
}

// wakeChannel(buffer, tokenOffset, token, callback)
Napi::Value OpenWakeChannel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mapping* m = GetMapping(info, 0);
  if (m == nullptr) return Napi::Value();
  size_t off;
  uint64_t token;
  if (!GetU64Offset(info, 1, "tokenOffset", m, 1, &off)) return Napi::Value();
  if (!GetToken(info, 2, &token)) return Napi::Value();
  if (!info[3].IsFunction()) {
    ThrowType(env, "ERR_INVALID_ARG_TYPE", "The \"callback\" argument must be a function");
    return Napi::Value();
  }
  if (!m->writable) {
    ThrowError(env, "ERR_COMMY_READONLY",
               "wakeChannel() needs a writable mapping (it publishes its token there)");
    return Napi::Value();
  }
  const char* syscall = "";
  const int fd = BindChannel(token, &syscall);
  if (fd < 0) {
    ThrowErrno(env, "ERR_COMMY_WAKE", syscall, -fd);
    return Napi::Value();
  }
  Napi::Value obj = StartChannel(env, fd, info[3].As<Napi::Function>());
  if (obj.IsEmpty()) return obj;
  // Published last: a writer can only ever learn an address that is bound
  // and polled already. (So nobody can squat it: it is random, and unknown
  // to anyone until it is ours.)
  __atomic_store_n(reinterpret_cast<uint64_t*>(static_cast<char*>(m->addr) + off), token,
                   __ATOMIC_SEQ_CST);
  return obj;
}

// wakeChannels(buffer, tokensOffset, bits): one byte to the channel of each
// slot in `bits` (slot i's token is the u64 at tokensOffset + 8 i; a zero
// token is no channel). Returns how many bytes were sent.
Napi::Value WakeChannels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mapping* m = GetMapping(info, 0);
  if (m == nullptr) return Napi::Value();
  size_t off;
  uint32_t bits;
  if (!GetU64Offset(info, 1, "tokensOffset", m, kSlotCount, &off)) return Napi::Value();
  if (!GetMask(info, 2, &bits)) return Napi::Value();
  EnvData* d = GetEnvData(env);
  const auto* tokens = reinterpret_cast<const uint64_t*>(static_cast<char*>(m->addr) + off);
  int sent = 0;
  for (uint32_t rest = bits; rest != 0; rest &= rest - 1) {
    const uint64_t token = __atomic_load_n(&tokens[__builtin_ctz(rest)], __ATOMIC_SEQ_CST);
    if (token != 0 && SendWake(d, token)) sent++;
  }
  return Napi::Number::New(env, sent);
}

}  // namespace

void InitWake(Napi::Env env, Napi::Object exports) {
  GetEnvData(env)->channel_ctor = Napi::Persistent(WakeChannel::Define(env));
  exports.Set("wakeChannel", Napi::Function::New(env, OpenWakeChannel, "wakeChannel"));
  exports.Set("wakeChannels", Napi::Function::New(env, WakeChannels, "wakeChannels"));
}

}  // namespace commy
