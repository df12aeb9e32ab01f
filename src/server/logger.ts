import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/** The server's own log (not the audit log): JSON lines on stderr, so stdout stays for what the CLI prints. */
export function createServerLogger(level = 'info'): Logger {
  return pino({ base: { log: 'server' }, level, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}
