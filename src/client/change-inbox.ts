import { EventQueue } from '../core/event-queue.js';
import { mergeChangeEvents, type FileChangeEvent } from '../core/file-change-event.js';

export type { WaitOptions } from '../core/event-queue.js';

/**
 * The client's one queue of change events from all its services (waitForFileChange, tryGetFileChange): the
 * core EventQueue, bounded per service, so that past `limit` queued events a new one folds into the last
 * queued event of the same service and never into another service's.
 */
export class ChangeInbox extends EventQueue<FileChangeEvent> {
  constructor(limit?: number) {
    super({ merge: mergeChangeEvents, groupOf: (event) => event.serviceId, ...(limit !== undefined ? { limit } : {}) });
  }
}
