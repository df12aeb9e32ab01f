import { CommyError, ErrorCode } from '../../core/errors.js';
import { compileGlobs, type GlobMatcher } from '../../core/glob.js';
import type { DirEntry } from '../../local/service-file.js';
import { encodeFrame } from '../../protocol/frame-codec.js';
import { splitByCost } from '../../protocol/frame-split.js';
import type { MessageOf, QueriedService, Update } from '../../protocol/messages.js';
import type { ServiceHost } from '../service-host.js';
import type { Reply, Session } from '../session.js';
import { defCost } from '../../protocol/variable-def.js';
import { entryDef, readOrGone } from '../snapshot.js';

/** What one definition (and value) costs in a page beyond its name and bytes, generously counted. */
const ITEM_OVERHEAD = 48;

/**
 * Query (a cancellable request): the tenant's services the key may read, filtered by globs, with their
 * variables' definitions and, if asked, values. The answer streams as QueryResponse pages under the Query's
 * request id, each within half the frame limit and sent only once the connection has room; the last says
 * `more: false`. QueryCancel (or the connection's end) aborts it between two pages or two services: it then
 * answers Error ABORTED.
 */
export async function query(s: Session, m: MessageOf<'Query'>, signal: AbortSignal): Promise<Reply> {
  const { tenant, values = false } = m.body;
  const perms = s.permissions(tenant);
  const services = m.body.services === undefined ? undefined : compileGlobs(m.body.services, s.ctx.limits);
  const variables = m.body.variables === undefined ? undefined : compileGlobs(m.body.variables, s.ctx.limits);
  const page = new Pager(s, m.id, signal);
  for (const service of s.ctx.registry.services(tenant)) {
    if (!perms.can('read', service) || (services !== undefined && !services(service))) continue;
    await page.room();
    const writable = perms.can('write', service);
    await s.withService(tenant, service, (host) => describe(s, host, variables, values, writable, page));
  }
  return page.last();
}

/**
 * One service's definitions (and values) into the pages, a group at a time: values are read only for the
 * group being added, so a large service never sits in memory whole.
 */
async function describe(s: Session, host: ServiceHost, wanted: GlobMatcher | undefined, values: boolean, writable: boolean, page: Pager): Promise<void> {
  const file = host.file;
  const version = Number(file.version);
  const entries = file.list().filter((e) => wanted === undefined || wanted(e.meta.name));
  const defs = new Map(entries.map((e) => [e, entryDef(e, file.entryVersion(e), s.protocol)]));
  const cost = (e: DirEntry) => defCost(defs.get(e)!) + ITEM_OVERHEAD + (values ? e.meta.size : 0);
  const groups = splitByCost(entries, cost, s.ctx.limits.maxFrameBytes / 2);
  if (groups.length === 0) groups.push([]); // a service with no (matching) variable is still listed
  for (const group of groups) {
    const part: QueriedService = { service: host.service, version, writable, variables: group.map((e) => defs.get(e)!) };
    if (values) part.values = await readAll(s, host, group);
    await page.add(part);
  }
}

/** What readAll gets for a variable another process removed while the query ran. */
const GONE = Symbol('gone');

async function readAll(s: Session, host: ServiceHost, entries: readonly DirEntry[]): Promise<Update[]> {
  const out: Update[] = [];
  for (const e of entries) {
    const copy = await s.whenFree(() => readOrGone(host.file, e) ?? GONE, `${host.serviceId}/${e.meta.name}`);
    if (copy !== GONE) out.push([e.index, Number(copy.version), copy.bytes]); // removed meanwhile: no value to give
  }
  return out;
}

/** Fills pages up to half the frame limit and sends each full one (more: true) once the connection has room. */
class Pager {
  private parts: QueriedService[] = [];
  private bytes = 0;

  constructor(
    private readonly s: Session,
    private readonly id: number,
    private readonly signal: AbortSignal,
  ) {}

  /** Waits for the connection's output to drain; throws the abort reason once cancelled. */
  async room(): Promise<void> {
    this.aborted();
    await this.s.link.outputRoom(false); // beside the ordered lane: its cancel must still be read
    this.aborted();
  }

  async add(part: QueriedService): Promise<void> {
    const size = sizeOf(part);
    if (this.parts.length > 0 && this.bytes + size > this.s.ctx.limits.maxFrameBytes / 2) {
      await this.room();
      this.s.link.send(encodeFrame('QueryResponse', this.id, { services: this.parts, more: true }));
      this.parts = [];
      this.bytes = 0;
    }
    this.parts.push(part);
    this.bytes += size;
  }

  last(): Reply {
    this.aborted();
    return encodeFrame('QueryResponse', this.id, { services: this.parts, more: false });
  }

  private aborted(): void {
    if (this.signal.aborted) throw this.signal.reason instanceof CommyError ? this.signal.reason : new CommyError(ErrorCode.ABORTED, 'query cancelled');
  }
}

function sizeOf(part: QueriedService): number {
  let n = part.service.length + ITEM_OVERHEAD;
  for (const d of part.variables) n += d[1].length + ITEM_OVERHEAD;
  for (const u of part.values ?? []) n += u[2].length;
  return n;
}

/** QueryCancel (immediate): aborts the named Query if it runs, or as soon as it starts. No reply. */
export function cancelQuery(s: Session, m: MessageOf<'QueryCancel'>): Reply {
  s.link.cancel(m.body.id);
  return undefined;
}
