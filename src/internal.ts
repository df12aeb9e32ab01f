/**
 * `commy/internal`: the parts behind the public API, for the package's tests and tools. No stability promise:
 * these change whenever the implementation does. Importing it registers the Node platform, as `commy` does.
 */
import type { FileAccessor } from './core/file-accessor.js';
import { VirtualVariableFile } from './client/virtual-variable-file.js';

export * from './index.js';

/** A VirtualVariableFile over an accessor the caller built (the public constructor's type hides FileAccessor). */
export function fileFromAccessor(accessor: FileAccessor): VirtualVariableFile {
  return new VirtualVariableFile(accessor);
}

export type { FileAccessor } from './core/file-accessor.js';
export { EventQueue, type EventQueueOptions } from './core/event-queue.js';
export { diffRangesJs, pairsFromFlat, variablesTouched } from './core/byte-diff.js';
export { mergeChangeEvents } from './core/file-change-event.js';
export { registerPlatform, currentPlatform, type ClientPlatform, type LocalAttachRequest } from './client/platform.js';
export { nodePlatform } from './client/node-platform.js';
export { browserPlatform } from './client/browser-platform.js';
export { webSocketTransport, type WebSocketConstructor, type WebSocketLike } from './client/web-socket-transport.js';
export type { Transport, TransportEvents, TransportFactory, TransportOptions } from './client/transport.js';
export { ChangeInbox } from './client/change-inbox.js';
export { Connection, type ConnectionOptions } from './client/connection.js';
export { RemoteFileAccessor, type RemoteContext } from './client/remote-accessor.js';
export { LocalFileAccessor } from './local/local-accessor.js';
export { ServiceFile, type ServiceFileOptions } from './local/service-file.js';
export { encodeFrame, decodeFrame } from './protocol/frame-codec.js';
export type { Message, MessageBodies, MessageTypeName } from './protocol/messages.js';
export { decodes, reactiveStats, type ReactiveStats } from './client/reactive.js';
export { StalenessTracker } from './client/staleness.js';
