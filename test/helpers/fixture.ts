/** Helpers for fixture scripts: talk to the parent test over IPC, report failures instead of dying silently. */
export function send(message: Record<string, unknown>): void {
  process.send?.(message);
}

export function onMessage(type: string): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const listener = (raw: unknown) => {
      const msg = raw as Record<string, unknown>;
      if (msg.type !== type) return;
      process.off('message', listener);
      resolve(msg);
    };
    process.on('message', listener);
  });
}

export function runFixture(main: () => Promise<void>): void {
  main().then(
    () => process.disconnect?.(),
    (err: unknown) => {
      send({ type: 'error', error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack}` : String(err) });
      process.exitCode = 1;
      process.disconnect?.();
    },
  );
}
