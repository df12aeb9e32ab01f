import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../server/config.js';
import { isStreamId, type StreamId } from './stream-id.js';

/**
 * Positions are saved at most this often while streams move: a kill costs at most this much of the stream
 * applied again at restart (which ends on the same values), and a busy node one small file write per period.
 */
const SAVE_DELAY_MS = 250;

interface PositionsFile {
  node: string;
  catalog: StreamId;
  services: Record<string, StreamId>;
}

/**
 * How far this node has applied each stream: `<dataDir>/cluster/positions.json`, so a restarted node reads on
 * from there. Saved at most every SAVE_DELAY_MS while it moves, by rename (never half-written). A position saved is always one
 * whose entries are in the files: a kill loses at most the last moves, and entries read again are applied
 * again, which ends on the same values (applying the stream is idempotent from any earlier point).
 */
export class Positions {
  private readonly path: string;
  private readonly data: PositionsFile;
  private timer: NodeJS.Timeout | undefined;
  private failing = false;

  constructor(
    dataDir: string,
    nodeId: string,
    /** A save that failed (disk full, directory gone): the node goes on, and saves again at the next move. */
    private readonly onError: (err: unknown) => void,
    private readonly saveDelayMs = SAVE_DELAY_MS,
  ) {
    const dir = join(dataDir, 'cluster');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.path = join(dir, 'positions.json');
    this.data = readPositions(this.path) ?? { node: nodeId, catalog: '0-0', services: {} };
    if (this.data.node !== nodeId) {
      throw new ConfigError('cluster.nodeId', `invalid config: cluster.nodeId: this data directory belongs to node ${JSON.stringify(this.data.node)}, not ${JSON.stringify(nodeId)}`);
    }
  }

  get catalog(): StreamId {
    return this.data.catalog;
  }

  set catalog(id: StreamId) {
    this.data.catalog = id;
    this.schedule();
  }

  /** The services this node has applied something of, with their positions. */
  services(): [string, StreamId][] {
    return Object.entries(this.data.services);
  }

  of(serviceId: string): StreamId | undefined {
    return this.data.services[serviceId];
  }

  set(serviceId: string, id: StreamId): void {
    this.data.services[serviceId] = id;
    this.schedule();
  }

  /** Writes now what is pending (at close). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const tmp = `${this.path}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(this.data), { mode: 0o600 });
      renameSync(tmp, this.path);
      this.failing = false;
    } catch (err) {
      // Not saved (disk full, a directory in the way): a restart would read again from an earlier position, which
      // is safe; never a reason to stop the node (this runs from a timer: a throw would end the process).
      if (!this.failing) this.onError(err);
      this.failing = true;
    }
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => this.flush(), this.saveDelayMs);
  }
}

/**
 * The saved positions, or undefined when there are none or they are garbled (then the node reads everything
 * again). A file that cannot be read at all (a directory, no permission) is refused: it could not be saved either.
 */
function readPositions(path: string): PositionsFile | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new ConfigError('dataDir', `invalid data directory: cannot read the cluster positions ${path} (${code ?? String(err)})`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const { node, catalog, services } = raw as Partial<PositionsFile>;
  if (typeof node !== 'string' || !isStreamId(catalog) || typeof services !== 'object' || services === null) return undefined;
  const clean: Record<string, StreamId> = {};
  for (const [k, v] of Object.entries(services)) if (isStreamId(v)) clean[k] = v;
  return { node, catalog, services: clean };
}
