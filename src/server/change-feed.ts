import type { ServiceFile } from '../local/service-file.js';

/** Changes to one service, as a feed reports them: visible in the service's file by the time they arrive. */
export interface FeedChange {
  /** The variables that changed, each once. */
  readonly changedVariables: readonly string[];
  /** The variables that were removed (their directory slots are tombstones now). */
  readonly removedVariables: readonly string[];
  /** The service version after these changes. */
  readonly version: bigint;
  /**
   * Every change at or below this version has now been reported, in this change or an earlier one (a low
   * watermark, at most `version`): what a subscriber that has received them all may resume from.
   */
  readonly settled: bigint;
}

export interface FeedSink {
  change(change: FeedChange): void;
  /** The feed can no longer report changes (e.g. the file was damaged by another process). */
  error(err: unknown): void;
}

/**
 * Where a service host learns that its service changed, whoever changed it. Today: the local change watcher
 * on the mapped file (local-change-feed.ts), which sees this server's writes and every local process's. A
 * cluster backplane (Redis) is a second implementation. Every implementation passes the contract suite in
 * test/helpers/change-feed-contract.ts: every change reported, in version order, none after close(), and a
 * settled version that never runs ahead of what was reported.
 */
export interface ChangeFeed {
  /** Starts reporting to `sink`; called once. */
  start(sink: FeedSink): void;
  /** Stops reporting; idempotent. Does not close the file. */
  close(): void;
}

/** Makes the feed of one open service. */
export type ChangeFeedFactory = (file: ServiceFile, serviceId: string) => ChangeFeed;
