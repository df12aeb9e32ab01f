/**
 * The soak's correct client (soak/soak.ts), in its own process: `truth-client URL TENANT KEY`. A writer sets a
 * counter `n` and a 64-byte blob derived from n, and flushes (acknowledged), as fast as acknowledgements come;
 * a reader checks every value it is sent (a blob must be whole, n never goes back) and must end on the last
 * acknowledged write. Sends {type:'ready'}; on {type:'stop'} answers {type:'result', truth} and exits.
 */
import { LogHistogram } from '../src/core/log-histogram.js';
import { AuthCredentials, Client, VariableMetadata, VariableType, type VirtualVariableFile } from '../src/index.js';

const BLOB = 64;

interface Truth {
  writes: number;
  checks: number;
  mismatches: string[];
  lastWritten: number;
  lastSeen: number;
}

/** The blob of write `n`: n, then bytes every one of which follows from n. Anything else in it is corruption. */
function blobOf(n: number): Uint8Array {
  const out = Buffer.alloc(BLOB);
  out.writeUInt32LE(n, 0);
  for (let i = 4; i < BLOB; i++) out[i] = (n * 31 + i * 7) & 0xff;
  return out;
}

function check(r: VirtualVariableFile, t: Truth): void {
  const n = r.get('n') as number;
  const blob = r.get('blob') as Uint8Array;
  t.checks++;
  const inBlob = Buffer.from(blob.buffer, blob.byteOffset, blob.length).readUInt32LE(0);
  if (inBlob !== 0 && Buffer.compare(Buffer.from(blob), Buffer.from(blobOf(inBlob))) !== 0) t.mismatches.push(`a torn or corrupted blob (n=${inBlob})`);
  if (n < t.lastSeen) t.mismatches.push(`n went back from ${t.lastSeen} to ${n}`);
  t.lastSeen = Math.max(t.lastSeen, n);
}

const [url, tenant, key] = process.argv.slice(2) as [string, string, string];
const options = { mode: 'remote' as const, reconnect: false as const };
const writer = await Client.initialize(url, tenant, AuthCredentials.apiKey(key), options);
const reader = await Client.initialize(url, tenant, AuthCredentials.apiKey(key), options);
const w = await writer.getVirtualServiceFile(tenant, 'truth');
await w.registerVariable(new VariableMetadata('n', -1, 4, VariableType.U32));
await w.registerVariable(new VariableMetadata('blob', -1, BLOB, VariableType.Bytes));
const r = await reader.getVirtualServiceFile(tenant, 'truth');
const t: Truth = { writes: 0, checks: 0, mismatches: [], lastWritten: 0, lastSeen: 0 };
const ackMs = new LogHistogram();
let running = true;
// Ends when the reader's client closes: never on its own, as a write may still be on its way.
const reading = (async () => {
  for await (const ev of r.changes()) {
    void ev;
    check(r, t);
  }
})();
const writing = (async () => {
  for (let n = 1; running; n++) {
    const sent = performance.now();
    w.set('n', n);
    w.set('blob', blobOf(n));
    await w.flush();
    ackMs.add(performance.now() - sent);
    t.writes++;
    t.lastWritten = n;
  }
})();

process.on('message', async (m: { type: string }) => {
  if (m.type !== 'stop') return;
  running = false;
  await writing;
  const deadline = Date.now() + 10_000;
  while (t.lastSeen < t.lastWritten && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
  if (t.lastSeen !== t.lastWritten) {
    const held = r.get('n') as number; // in its buffer: a delivery that raised no change event, or none at all
    t.mismatches.push(`the reader's change events ended on n=${t.lastSeen} (its buffer holds ${held}); the last acknowledged write was ${t.lastWritten}`);
  }
  await Promise.allSettled([writer.close(), reader.close()]);
  await Promise.race([reading, new Promise((res) => setTimeout(res, 1000))]);
  process.send!({ type: 'result', truth: { ...t, ackMs: ackMs.sparse() } }, () => process.exit(0));
});
process.send!({ type: 'ready' });
