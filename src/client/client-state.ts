import { CommyError, ErrorCode } from '../core/errors.js';
import { asCommyError } from './client-errors.js';
import type { ClientState } from './client-options.js';

export type StateListener = (state: ClientState) => void;

/** The client's state (Client.state) and the listeners that hear each change of it. */
export class ClientStateCell {
  private current: ClientState = 'connecting';
  private readonly listeners = new Set<StateListener>();

  /** `onError` hears of a listener that threw: a listener never breaks the change it is told of. */
  constructor(private readonly onError: (err: CommyError) => void) {}

  get value(): ClientState {
    return this.current;
  }

  add(fn: StateListener): void {
    this.listeners.add(fn);
  }

  remove(fn: StateListener): void {
    this.listeners.delete(fn);
  }

  set(state: ClientState): void {
    if (this.current === state) return;
    this.current = state;
    for (const fn of [...this.listeners]) {
      try {
        fn(state);
      } catch (err) {
        this.onError(asCommyError(err, "a 'state' listener threw"));
      }
    }
  }
}

/** Client.on/off's arguments: the one event is 'state', with a function. */
export function checkEvent(event: string, fn: unknown): void {
  if (event !== 'state') throw new CommyError(ErrorCode.TYPE_MISMATCH, `unknown event ${JSON.stringify(event)}: a Client emits 'state'`);
  if (typeof fn !== 'function') throw new CommyError(ErrorCode.TYPE_MISMATCH, 'the listener must be a function');
}
