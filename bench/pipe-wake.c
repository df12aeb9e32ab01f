/*
 * The machine's floor for "a change in one process seen by another" (bench/local-change.ts compiles it with
 * `cc -O2` into a temporary directory and runs it beside commy and Redis).
 *
 * Two processes, two pipes. The parent sleeps `pace_us`, stamps CLOCK_MONOTONIC into a shared page and writes
 * one byte into the child's pipe; the child, parked in epoll_wait, wakes, reads the byte, takes the clock
 * (one way = its clock − the stamp) and answers with one byte into the parent's pipe, where the parent is
 * parked in epoll_wait too (half round trip = (parent's clock after the answer − stamp) / 2).
 *
 * Usage: pipe-wake SAMPLES WARMUP PACE_US. Prints one line per sample after the warm-up: "half_ns oneway_ns".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parked_on(int fd) {
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll"); exit(1); }
  return ep;
}

static void wait_byte(int ep, int fd, char *c) {
  struct epoll_event ev;
  while (epoll_wait(ep, &ev, 1, -1) != 1) {}
  if (read(fd, c, 1) != 1) { perror("read"); exit(1); }
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s SAMPLES WARMUP PACE_US\n", argv[0]); return 2; }
  long samples = atol(argv[1]), warmup = atol(argv[2]), pace_us = atol(argv[3]);
  long total = samples + warmup;
  int down[2], up[2];
  if (pipe(down) || pipe(up)) { perror("pipe"); return 1; }
  /* shared: [0] the stamp, [1 + i] the child's one-way figure of round i */
  volatile uint64_t *shared = mmap(NULL, sizeof(uint64_t) * (total + 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) { perror("mmap"); return 1; }
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) {
    int ep = parked_on(down[0]);
    for (long i = 0; i < total; i++) {
      char c;
      wait_byte(ep, down[0], &c);
      uint64_t t = now_ns();
      shared[1 + i] = t - __atomic_load_n(&shared[0], __ATOMIC_ACQUIRE);
      if (write(up[1], "y", 1) != 1) { perror("write"); return 1; }
    }
    return 0;
  }
  int ep = parked_on(up[0]);
  uint64_t *half = malloc(sizeof(uint64_t) * total);
  struct timespec pace = {.tv_sec = pace_us / 1000000, .tv_nsec = (pace_us % 1000000) * 1000};
  for (long i = 0; i < total; i++) {
    if (pace_us > 0) nanosleep(&pace, NULL);
    uint64_t t0 = now_ns();
    __atomic_store_n(&shared[0], t0, __ATOMIC_RELEASE);
    if (write(down[1], "x", 1) != 1) { perror("write"); return 1; }
    char c;
    wait_byte(ep, up[0], &c);
    half[i] = (now_ns() - t0) / 2;
  }
  waitpid(pid, NULL, 0);
  for (long i = warmup; i < total; i++) printf("%llu %llu\n", (unsigned long long)half[i], (unsigned long long)shared[1 + i]);
  return 0;
}
