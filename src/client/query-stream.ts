import { CommyError, ErrorCode } from '../core/errors.js';
import { codecOf } from '../core/struct-codec.js';
import { VariableMetadata } from '../core/variable-metadata.js';
import { definitionProblem } from '../core/variable-rules.js';
import { VariableType, type VariableValue } from '../core/variable-type.js';
import type { QueriedService as WireService, QueryBody, QueryResponseBody, Update, VariableDef } from '../protocol/messages.js';
import { metadataOfDef } from '../protocol/variable-def.js';
import type { Connection } from './connection.js';

/** What client.query() asks: a tenant's services (globs), their variables (globs), with values or not. */
export interface QuerySpec {
  tenant: string;
  services?: string[];
  variables?: string[];
  values?: boolean;
}

export interface QueriedVariable {
  readonly metadata: VariableMetadata;
  /** The version of its last change. */
  readonly version: bigint;
  /** Its value, when the query asked for values. */
  readonly value?: VariableValue;
}

/** One service in a page (a large service may continue in the next page, under the same name). */
export interface QueriedService {
  readonly service: string;
  readonly version: bigint;
  readonly variables: QueriedVariable[];
  /** This client's key may write the service. */
  readonly writable: boolean;
}

export interface QueryPage {
  readonly services: QueriedService[];
}

/**
 * The pages of one Query as an async iterator. Aborting `signal` (or leaving the loop) sends QueryCancel
 * and ends the iteration at once, even mid-stream; pages already received are dropped. A failure (the
 * server's Error, a lost connection) rejects the next call.
 */
export function queryPages(conn: Connection, spec: QuerySpec, signal: AbortSignal | undefined): AsyncIterableIterator<QueryPage> {
  const pages: QueryPage[] = [];
  const waiting: { resolve(r: IteratorResult<QueryPage>): void; reject(err: unknown): void }[] = [];
  let finished = false;
  let failure: unknown;
  let id: number | undefined;
  const settle = (): void => {
    while (waiting.length > 0 && (pages.length > 0 || finished || failure !== undefined)) {
      const w = waiting.shift()!;
      const page = pages.shift();
      if (page !== undefined) w.resolve({ value: page, done: false });
      else if (failure !== undefined) w.reject(failure);
      else w.resolve({ value: undefined, done: true });
    }
  };
  const stop = (): void => {
    if (finished) return;
    finished = true;
    pages.length = 0;
    if (id !== undefined) conn.notify('QueryCancel', { id });
    signal?.removeEventListener('abort', stop);
    settle();
  };
  if (signal?.aborted) finished = true;
  else {
    signal?.addEventListener('abort', stop, { once: true });
    id = conn.call('Query', bodyOf(spec), 'QueryResponse', {
      reply: (body: QueryResponseBody) => {
        if (finished) return;
        pages.push({ services: body.services.map(serviceOf) });
        if (!body.more) {
          finished = true;
          signal?.removeEventListener('abort', stop);
        }
        settle();
      },
      fail: (err) => {
        if (finished) return;
        failure = err;
        signal?.removeEventListener('abort', stop);
        settle();
      },
      more: (body) => body.more,
    });
  }
  const iterator: AsyncIterableIterator<QueryPage> = {
    next: () => new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      settle();
    }),
    return: () => {
      stop();
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}

function bodyOf(spec: QuerySpec): QueryBody {
  if (typeof spec !== 'object' || spec === null) throw new CommyError(ErrorCode.TYPE_MISMATCH, 'query takes { tenant, services?, variables?, values? }');
  const { tenant, services, variables, values } = spec;
  return { tenant, ...(services !== undefined ? { services } : {}), ...(variables !== undefined ? { variables } : {}), ...(values !== undefined ? { values } : {}) };
}

/** The wire's definitions and values as metadata and typed values. */
function serviceOf(wire: WireService): QueriedService {
  const values = new Map((wire.values ?? []).map((u) => [u[0], u]));
  return { service: wire.service, version: BigInt(wire.version), variables: wire.variables.map((def) => variableOf(def, values.get(def[0]))), writable: wire.writable === true };
}

/** One definition (and value): a type (or layout) this client does not know, or a value of another size, keeps its bytes. */
function variableOf(def: VariableDef, update: Update | undefined): QueriedVariable {
  const [, name, offset, size, , version] = def;
  const described = metadataOfDef(def);
  const known = definitionProblem(described) === undefined;
  const metadata = known ? described : new VariableMetadata(name, offset, size, VariableType.Bytes);
  if (update === undefined) return { metadata, version: BigInt(version) };
  const bytes = update[2];
  const typed = known && bytes.length === size;
  const value = typed ? codecOf(metadata).load(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0) : new Uint8Array(bytes);
  return { metadata, version: BigInt(update[1]), value };
}
