export { Server, type ServerOptions } from './server.js';
export { loadConfig, type ServerConfig, type TenantConfig, type KeyConfig } from './config.js';
export type { AuthStats } from './auth.js';
export { hashKey } from './key-hash.js';
export { ConfigError } from './config.js';
export type { AdmissionCounts } from './admission.js';
export { selfSignedTls, type TlsMaterial } from './tls.js';
export { DEFAULT_LIMITS, type Limits } from './limits.js';
