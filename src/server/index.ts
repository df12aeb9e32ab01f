export { Server, type ServerOptions } from './server.js';
export { loadConfig, type ServerConfig, type TenantConfig, type KeyConfig } from './config.js';
export { hashKey } from './auth.js';
export { selfSignedTls, type TlsMaterial } from './tls.js';
export { DEFAULT_LIMITS, type Limits } from './limits.js';
