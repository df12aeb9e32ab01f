import { pairsFromFlat } from '../core/byte-diff.js';
import { CommyError, ErrorCode } from '../core/errors.js';
import { LocalFileAccessor } from '../local/local-accessor.js';
import type { ServiceFileOptions } from '../local/service-file.js';
import { native } from '../native/addon.js';
import type { OpenOptions } from './virtual-variable-file.js';
import { attachLocal } from './local-attach.js';
import { openMirror } from './mirror-file.js';
import type { ClientPlatform } from './platform.js';
import { openWsTransport } from './ws-transport.js';

/** Node: `ws`, the native SIMD diff, the server's file mapped when on its machine, embedded files, mirror files. */
export const nodePlatform: ClientPlatform = {
  name: 'node',
  openTransport: openWsTransport,
  diff: (a, b) => pairsFromFlat(native.diff(a, b)),
  warn: (err) => process.emitWarning(err),
  attachLocal,
  openFile: openLocalFile,
  openMirror,
};

/** Embedded mode: only the options a user may pass reach the file (the server's own checks stay its own). */
function openLocalFile(path: string, options: OpenOptions): LocalFileAccessor {
  if (typeof options !== 'object' || options === null) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'open options must be an object');
  const { create, maxVariables, maxFileSize, maxVariableSize, readOnly, tenant, service, label } = options;
  const picked: ServiceFileOptions = { create, maxVariables, maxFileSize, maxVariableSize, readOnly, tenant, service, label };
  for (const key of Object.keys(picked) as (keyof ServiceFileOptions)[]) if (picked[key] === undefined) delete picked[key];
  try {
    return LocalFileAccessor.open(path, picked);
  } catch (err) {
    if (err instanceof CommyError) throw err;
    throw new CommyError(ErrorCode.INTERNAL_ERROR, `${path}: cannot open: ${String(err)}`, { cause: err });
  }
}
