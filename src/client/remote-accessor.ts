export type { RemoteContext } from './remote/context.js';
export { RemoteFileAccessor } from './remote/remote-file-accessor.js';
