import type { ByteRange } from '../core/byte-diff.js';
import { CommyError, ErrorCode } from '../core/errors.js';
import type { FileAccessor } from '../core/file-accessor.js';
import type { VariablesUpdatedBody } from '../protocol/messages.js';
import type { OpenOptions } from './virtual-variable-file.js';
import type { Connection } from './connection.js';
import type { RemoteFileAccessor } from './remote/remote-file-accessor.js';
import type { TransportFactory } from './transport.js';

/** What mapping the server's own file needs from the client (Node only: see local-attach.ts). */
export interface LocalAttachRequest {
  readonly conn: Connection;
  readonly tenant: string;
  readonly service: string;
  /** From Authenticated: the machine the server runs on. */
  readonly serverHostId: string | undefined;
  /** Delivers a notify subscription's VariablesUpdated pushes to `onUpdated`; `undefined` stops. */
  route(sid: number, onUpdated: ((body: VariablesUpdatedBody) => void) | undefined): void;
  /** A change listener that threw, a notice that could not be read. */
  onError(err: CommyError): void;
}

/** A remote service file to back with a mirror file (Node only: see mirror-file.ts). */
export interface MirrorRequest {
  readonly accessor: RemoteFileAccessor;
  readonly tenant: string;
  readonly service: string;
  /** ClientOptions.mirror.dir; undefined: the platform's default directory. */
  readonly dir: string | undefined;
  /** Failures of the mirror nobody awaits (a write other processes made that the server refused, …). */
  onError(err: CommyError): void;
}

/**
 * What the client core needs from its runtime. The core imports nothing of Node; an entry registers its
 * runtime's platform when loaded (as nats.js registers its transport): 'commy' registers Node's (`ws`, the
 * native diff, local mapping and embedded files: node-platform.ts), the `browser` condition the global
 * WebSocket and the JS diff, remote mode only (browser-platform.ts).
 */
export interface ClientPlatform {
  /** For messages: 'node', 'browser'. */
  readonly name: string;
  readonly openTransport: TransportFactory;
  diff(a: Uint8Array, b: Uint8Array): ByteRange[];
  /** Where failures nobody awaits go when the application gave no ClientOptions.onError. */
  warn(err: CommyError): void;
  /** Maps the server's file when it runs on this machine; absent: remote mode only. */
  readonly attachLocal?: (request: LocalAttachRequest) => Promise<FileAccessor>;
  /** Embedded mode (VirtualVariableFile.open); absent: no local files on this platform. */
  readonly openFile?: (path: string, options: OpenOptions) => FileAccessor;
  /**
   * ClientOptions.mirror: creates the request's mirror file and keeps it in sync with the accessor until the
   * accessor closes (docs/client.md, "Mirror files"); absent: no mirror files on this platform.
   */
  readonly openMirror?: (request: MirrorRequest) => void;
}

let registered: ClientPlatform | undefined;

/** Makes `platform` the one every Client and VirtualVariableFile uses from now on (the last registration wins). */
export function registerPlatform(platform: ClientPlatform): void {
  registered = platform;
}

/** The registered platform; INTERNAL_ERROR when no entry registered one (a deep import of the core alone). */
export function currentPlatform(): ClientPlatform {
  if (registered === undefined) {
    throw new CommyError(
      ErrorCode.INTERNAL_ERROR,
      "no Commy client platform is registered: import the client from the package ('commy', or its browser build), not from one of its internal modules",
    );
  }
  return registered;
}
