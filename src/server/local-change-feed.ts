import { ChangeWatcher } from '../local/change-watcher.js';
import type { ServiceFile } from '../local/service-file.js';
import type { ChangeFeed, FeedSink } from './change-feed.js';

/** The single-server feed: the mapped file's change watcher (src/local/change-watcher.ts). */
export class LocalChangeFeed implements ChangeFeed {
  private watcher: ChangeWatcher | undefined;

  constructor(
    private readonly file: ServiceFile,
    private readonly serviceId: string,
  ) {}

  start(sink: FeedSink): void {
    if (this.watcher !== undefined) return;
    const watcher = new ChangeWatcher(this.file, this.serviceId, (err) => sink.error(err));
    watcher.add((event) =>
      sink.change({ changedVariables: event.changedVariables, removedVariables: event.removedVariables, version: event.version, settled: watcher.settledVersion }),
    );
    this.watcher = watcher;
  }

  close(): void {
    this.watcher?.close();
  }
}

export function localChangeFeed(file: ServiceFile, serviceId: string): ChangeFeed {
  return new LocalChangeFeed(file, serviceId);
}
