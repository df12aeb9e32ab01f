import { pino, type Logger } from 'pino';

/** One JSON line per GetServiceFilePath and per applied change (docs/operations.md lists the fields). */
export interface AuditEvent {
  event: 'GetServiceFilePath' | 'Subscription' | 'VariablesChanged' | 'VariableRegistered' | 'ServiceCreated';
  clientId: string;
  keyId: string;
  tenant: string;
  service: string;
  variables?: string[];
  filePath?: string;
}

export interface AuditLog {
  record(event: AuditEvent): void;
  close(): Promise<void>;
}

const silent: AuditLog = { record: () => {}, close: async () => {} };

/** Audit to a file (appended) or stdout; `enabled: false` records nothing. */
export function createAuditLog(options: { enabled: boolean; file?: string }): AuditLog {
  if (!options.enabled) return silent;
  const destination = pino.destination({ dest: options.file ?? 1, sync: false, mkdir: true });
  const logger: Logger = pino({ base: { log: 'audit' }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
  return {
    record: (event) => logger.info(event),
    close: () =>
      new Promise<void>((resolve) => {
        if (options.file === undefined) {
          destination.flush(() => resolve());
          return;
        }
        // end() writes what is still buffered, then closes the file.
        destination.once('close', () => resolve());
        destination.end();
      }),
  };
}
