/**
 * `npm run bench:compression`: does compression pay for commy's large frames?
 *
 * Four realistic payloads, encoded with the real `encodeFrame`:
 *   (a) a 1 MiB Snapshot of a sensor service (mostly f64 random walks),
 *   (b) a Snapshot of 64 KiB String variables holding JSON-like text,
 *   (c) a SyncBatch of 1,000 small numeric updates,
 *   (d) a SyncBatch of random (incompressible) bytes.
 * Part 1 (CPU): size and compress/decompress time for each method, in interleaved rounds after warm-up:
 *   none; permessage-deflate as `ws` runs it, re-created from its code (a deflateRaw stream per connection, zlib's default level
 *   6, Z_SYNC_FLUSH, context takeover, on the thread pool); deflateRawSync level 6 (no context takeover);
 *   deflateRawSync level 1 and brotli quality 1 (per-frame compression, as an application would do above a
 *   threshold).
 * Part 2 (end to end): a real loopback WebSocket (`ws` server in its own process, client here): request →
 *   frame of (a) or (c), with perMessageDeflate off, on (ws defaults), and per-frame deflate level 1 above
 *   64 KiB done by the application. p50/p99 per frame, rounds interleaved, after a warm-up round.
 * Then a link-speed model: time per frame = compress + decompress + bytes / bandwidth.
 * Run with `--server` it is part 2's server (forked by the bench itself).
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeFrame, encodeFrame } from '../src/protocol/frame-codec.js';
import type { Update, VariableDef } from '../src/protocol/messages.js';
import { percentile, seededRandom } from './harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** Per-frame compression only for frames at least this big (option ii). */
const THRESHOLD = 64 * KiB;
/** Distinct frames per payload (different moments of the same service), used in rotation. */
const VARIANTS = 4;

// ---------------------------------------------------------------------------------------------- payloads

function copy(frame: Uint8Array): Buffer {
  return Buffer.from(frame); // msgpackr may hand out views of its own buffer: own the bytes
}

const SENSORS = 4096;
const WINDOW = 256; // bytes per sensor variable: 32 readings
const KINDS = ['temp', 'pressure', 'flow', 'rpm', 'voltage', 'current', 'humidity', 'vibration'];

/**
 * (a) 4,096 variables of 256 bytes = 1 MiB of data: each a Bytes variable holding a sensor's last 32 readings,
 * little-endian f64, a random walk with small steps quantised to 0.01 (90 %), or u64 counters (10 %).
 * (a′) the same with full-precision f64 (computed values: averages, unit conversions), which repeat far less.
 */
function sensorSnapshot(variant: number, quantised = true): Buffer {
  const rand = seededRandom(1000 + variant);
  const data = new Uint8Array(SENSORS * WINDOW);
  const view = new DataView(data.buffer);
  const variables: VariableDef[] = [];
  for (let s = 0; s < SENSORS; s++) {
    const offset = s * WINDOW;
    const kind = KINDS[s % KINDS.length]!;
    const counter = s % 10 === 9;
    variables.push([s, `plant-${s >> 10}/line-${(s >> 5) & 31}/${counter ? 'count' : kind}-${s}`, offset, WINDOW, 0, 1 + s + variant * SENSORS]);
    if (counter) {
      let c = Math.floor(rand() * 1e7);
      for (let i = 0; i < WINDOW / 8; i++) view.setBigUint64(offset + i * 8, BigInt((c += Math.floor(rand() * 20))), true);
    } else {
      let v = 10 + rand() * 90;
      for (let i = 0; i < WINDOW / 8; i++) {
        v += (rand() - 0.5) * 0.2;
        view.setFloat64(offset + i * 8, quantised ? Math.round(v * 100) / 100 : v, true);
      }
    }
  }
  return copy(encodeFrame('Snapshot', 7, { sid: 1, serviceId: 'plant/sensors', version: 5_000_000 + variant, fileId: 'f0e1d2c3b4a59687', variables, data, readOnly: false }));
}

const STATUSES = ['ok', 'ok', 'ok', 'ok', 'degraded', 'maintenance', 'offline'];
const MODELS = ['EdgeBox 300', 'EdgeBox 310', 'SensorHub X2', 'GatewayPro', 'PLC-7 bridge'];

/** One JSON document of device records, filling `fill` bytes of a 64 KiB String variable (zero padding after). */
function jsonDoc(rand: () => number, fill: number): string {
  const devices: string[] = [];
  let size = 2;
  for (let i = 0; ; i++) {
    const id = Math.floor(rand() * 100000);
    const rec = JSON.stringify({
      id: `dev-${String(id).padStart(5, '0')}`,
      name: `${MODELS[id % MODELS.length]} #${id % 997}`,
      ip: `10.${id % 256}.${(id >> 3) % 256}.${Math.floor(rand() * 254) + 1}`,
      firmware: `2.${Math.floor(rand() * 20)}.${Math.floor(rand() * 40)}`,
      status: STATUSES[Math.floor(rand() * STATUSES.length)],
      temperature: Math.round((30 + rand() * 40) * 10) / 10,
      uptimeSeconds: Math.floor(rand() * 9e6),
      lastSeen: new Date(1_760_000_000_000 + Math.floor(rand() * 86_400_000)).toISOString(),
      tags: [`zone-${'abcdef'[id % 6]}`, `rack-${id % 40}`],
    });
    if (size + rec.length + 1 > fill) break;
    devices.push(rec);
    size += rec.length + 1;
  }
  return `[${devices.join(',')}]`;
}

/** (b) 8 String variables of 64 KiB capacity, each holding a JSON document of 70–95 % of that. */
function jsonSnapshot(variant: number): Buffer {
  const rand = seededRandom(2000 + variant);
  const N = 8;
  const cap = 64 * KiB;
  const data = new Uint8Array(N * cap);
  const variables: VariableDef[] = [];
  const enc = new TextEncoder();
  for (let i = 0; i < N; i++) {
    data.set(enc.encode(jsonDoc(rand, Math.floor(cap * (0.7 + rand() * 0.25)))), i * cap);
    variables.push([i, `inventory/site-${i}`, i * cap, cap, 12, 1 + i + variant * N]);
  }
  return copy(encodeFrame('Snapshot', 8, { sid: 2, serviceId: 'ops/inventory', version: 900 + variant, fileId: 'a1b2c3d4e5f60718', variables, data, readOnly: false }));
}

/** (c) a SyncBatch of 1,000 f64 updates: the same 1,000 sensors each batch, versions and values moving on. */
function numericBatch(variant: number): Buffer {
  const pick = seededRandom(3000); // which sensors: the same in every variant, as successive batches would be
  const rand = seededRandom(3100 + variant);
  const indices = new Set<number>();
  while (indices.size < 1000) indices.add(Math.floor(pick() * SENSORS));
  const updates: Update[] = [];
  let version = 7_000_000 + variant * 1000;
  for (const index of [...indices].sort((x, y) => x - y)) {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, Math.round((10 + pick() * 90 + (rand() - 0.5) * variant) * 100) / 100, true);
    updates.push([index, ++version, bytes]);
  }
  return copy(encodeFrame('SyncBatch', 0, { sid: 1, version, updates }));
}

/** (d) a SyncBatch of 64 updates of 8 KiB random bytes (512 KiB: half the frame limit, like a server batch). */
function randomBatch(variant: number): Buffer {
  const rand = seededRandom(4000 + variant);
  const updates: Update[] = [];
  for (let i = 0; i < 64; i++) {
    const bytes = new Uint8Array(8 * KiB);
    const words = new Uint32Array(bytes.buffer);
    for (let w = 0; w < words.length; w++) words[w] = Math.floor(rand() * 4294967296);
    updates.push([i * 3, 100 + i + variant * 64, bytes]);
  }
  return copy(encodeFrame('SyncBatch', 0, { sid: 3, version: 164 + variant * 64, updates }));
}

interface Payload {
  key: string;
  name: string;
  frames: Buffer[];
  rounds: number;
}

function payloads(): Payload[] {
  const make = (f: (v: number) => Buffer) => Array.from({ length: VARIANTS }, (_, v) => f(v));
  return [
    { key: 'a', name: '(a) 1 MiB sensor Snapshot (f64 walks)', frames: make(sensorSnapshot), rounds: 12 },
    { key: 'a2', name: '(a′) same, full-precision f64', frames: make((v) => sensorSnapshot(v, false)), rounds: 12 },
    { key: 'b', name: '(b) Snapshot, 8 × 64 KiB JSON strings', frames: make(jsonSnapshot), rounds: 20 },
    { key: 'c', name: '(c) SyncBatch, 1,000 f64 updates', frames: make(numericBatch), rounds: 300 },
    { key: 'd', name: '(d) SyncBatch, 512 KiB random bytes', frames: make(randomBatch), rounds: 20 },
  ];
}

// ------------------------------------------------------------------------------------------------ codecs

interface Codec {
  compress(b: Buffer): Buffer | Promise<Buffer>;
  decompress(b: Buffer): Buffer | Promise<Buffer>;
}
interface Method {
  name: string;
  /** A fresh codec per payload: a stream keeps its context (the previous frames) like one connection would. */
  make(): Codec;
}

const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** permessage-deflate as ws 8 runs it: one deflateRaw/inflateRaw stream pair per connection, context kept. */
function wsPerMessageDeflate(): Codec {
  const deflate = zlib.createDeflateRaw({ windowBits: zlib.constants.Z_DEFAULT_WINDOWBITS }); // level: zlib default (6)
  const inflate = zlib.createInflateRaw({ windowBits: zlib.constants.Z_DEFAULT_WINDOWBITS });
  let dOut: Buffer[] = [];
  let iOut: Buffer[] = [];
  deflate.on('data', (c: Buffer) => dOut.push(c));
  inflate.on('data', (c: Buffer) => iOut.push(c));
  return {
    compress: (b) =>
      new Promise((resolve) => {
        deflate.write(b);
        deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          const out = Buffer.concat(dOut);
          dOut = [];
          resolve(out.subarray(0, out.length - 4)); // ws drops the 00 00 ff ff of the sync flush
        });
      }),
    decompress: (b) =>
      new Promise((resolve) => {
        inflate.write(b);
        inflate.write(TRAILER);
        inflate.flush(() => {
          const out = Buffer.concat(iOut);
          iOut = [];
          resolve(out);
        });
      }),
  };
}

const METHODS: Method[] = [
  { name: 'none', make: () => ({ compress: (b) => b, decompress: (b) => b }) },
  { name: 'ws permessage-deflate (L6, context takeover)', make: wsPerMessageDeflate },
  { name: 'deflateRaw L6 per message (no takeover)', make: () => ({ compress: (b) => zlib.deflateRawSync(b, { level: 6 }), decompress: (b) => zlib.inflateRawSync(b) }) },
  { name: 'per-frame deflateRaw L1', make: () => ({ compress: (b) => zlib.deflateRawSync(b, { level: 1 }), decompress: (b) => zlib.inflateRawSync(b) }) },
  {
    name: 'per-frame brotli q1',
    make: () => ({
      compress: (b) => zlib.brotliCompressSync(b, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: b.length } }),
      decompress: (b) => zlib.brotliDecompressSync(b),
    }),
  },
];

const now = () => process.hrtime.bigint();
const us = (a: bigint, b: bigint) => Number(b - a) / 1000;

interface CpuResult {
  payload: Payload;
  raw: number;
  encodeUs: number;
  decodeUs: number;
  methods: { name: string; bytes: number; cUs: number[]; dUs: number[] }[];
}

async function cpu(p: Payload): Promise<CpuResult> {
  const codecs = METHODS.map((m) => m.make());
  const res = METHODS.map((m) => ({ name: m.name, bytes: [] as number[], cUs: [] as number[], dUs: [] as number[] }));
  const enc: number[] = [];
  const dec: number[] = [];
  const WARM = Math.max(3, Math.floor(p.rounds / 10));
  for (let r = -WARM; r < p.rounds; r++) {
    const frame = p.frames[(r + WARM) % VARIANTS]!;
    // For scale: what MessagePack decoding (and validation) of the same frame costs the receiver anyway.
    const t0 = now();
    decodeFrame(frame, Infinity);
    const t1 = now();
    if (r >= 0) dec.push(us(t0, t1));
    for (let k = 0; k < METHODS.length; k++) {
      const i = (k + r + WARM) % METHODS.length; // interleaved, order rotating each round
      const codec = codecs[i]!;
      const a = now();
      const c = await codec.compress(frame);
      const b = now();
      const d = await codec.decompress(c);
      const e = now();
      if (r === -WARM && !d.equals(frame)) throw new Error(`${METHODS[i]!.name} did not round-trip ${p.key}`);
      if (r >= 0) {
        res[i]!.bytes.push(c.length);
        res[i]!.cUs.push(us(a, b));
        res[i]!.dUs.push(us(b, e));
      }
    }
  }
  // encodeFrame cost, for scale: re-encode the decoded body of one variant.
  const msg = decodeFrame(p.frames[0]!, Infinity);
  for (let r = -WARM; r < p.rounds; r++) {
    const t0 = now();
    encodeFrame(msg.type, msg.id, msg.body as never);
    if (r >= 0) enc.push(us(t0, now()));
  }
  return {
    payload: p,
    raw: percentile(p.frames.map((f) => f.length), 50),
    encodeUs: percentile(enc, 50),
    decodeUs: percentile(dec, 50),
    methods: res.map((m) => ({ name: m.name, bytes: percentile(m.bytes, 50), cUs: m.cUs, dUs: m.dUs })),
  };
}

// ----------------------------------------------------------------------------------------- loopback part

type Mode = 'off' | 'pmd' | 'pmd-L1' | 'frame-L1';
const MODES: Mode[] = ['off', 'pmd', 'pmd-L1', 'frame-L1'];
/** ws's permessage-deflate tuned: level 1, only frames of 64 KiB and more, no context kept between messages. */
const PMD_L1 = { zlibDeflateOptions: { level: 1 }, threshold: THRESHOLD, serverNoContextTakeover: true, clientNoContextTakeover: true };
const MODE_NAMES: Record<Mode, string> = {
  off: 'perMessageDeflate off (today)',
  pmd: 'perMessageDeflate on (ws defaults)',
  'pmd-L1': `perMessageDeflate L1, threshold ${THRESHOLD / KiB} KiB, no takeover`,
  'frame-L1': `app per-frame deflate L1 ≥ ${THRESHOLD / KiB} KiB`,
};
const LOOP_KEYS = ['a', 'c'];

async function serve(): Promise<void> {
  const all = payloads().filter((p) => LOOP_KEYS.includes(p.key));
  const ports: Partial<Record<Mode, number>> = {};
  const servers: WebSocketServer[] = [];
  for (const mode of MODES) {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: mode === 'pmd' ? true : mode === 'pmd-L1' ? PMD_L1 : false, maxPayload: 4 * MiB });
    wss.on('connection', (ws) =>
      ws.on('message', (m: Buffer) => {
        const frame = all[m[0]!]!.frames[m[1]!]!;
        ws.send(mode === 'frame-L1' && frame.length >= THRESHOLD ? zlib.deflateRawSync(frame, { level: 1 }) : frame, { binary: true });
      }),
    );
    await new Promise((r) => wss.once('listening', r));
    ports[mode] = (wss.address() as { port: number }).port;
    servers.push(wss);
  }
  process.send?.(ports);
  process.on('message', () => {
    for (const s of servers) s.close();
    process.disconnect?.();
  });
}

interface LoopResult {
  key: string;
  mode: Mode;
  samples: number[];
  /** Bytes the client's TCP socket read per frame (WebSocket header included), median. */
  wire: number[];
}

async function loopback(all: Payload[]): Promise<LoopResult[]> {
  const child = fork(fileURLToPath(import.meta.url), ['--server'], { stdio: 'inherit' });
  const ports = await new Promise<Record<Mode, number>>((r) => child.once('message', (m) => r(m as Record<Mode, number>)));
  const sockets = {} as Record<Mode, WebSocket>;
  for (const mode of MODES) {
    const ws = new WebSocket(`ws://127.0.0.1:${ports[mode]}`, { perMessageDeflate: mode === 'pmd' ? true : mode === 'pmd-L1' ? PMD_L1 : false, maxPayload: 4 * MiB });
    await new Promise((r) => ws.once('open', r));
    if (mode.startsWith('pmd') && !ws.extensions.includes('permessage-deflate')) throw new Error('permessage-deflate was not negotiated');
    sockets[mode] = ws;
  }
  const loop = all.filter((p) => LOOP_KEYS.includes(p.key));
  const perRound: Record<string, number> = { a: 15, c: 100 };
  const out: LoopResult[] = [];
  for (const p of loop) for (const mode of MODES) out.push({ key: p.key, mode, samples: [], wire: [] });
  const ROUNDS = 6;
  let seq = 0;
  // Payload outermost, then the modes in an order rotating each round: every mode's (c) frames follow (c)
  // frames, not a burst of 1 MiB ones (whose garbage would be collected during the next mode's samples).
  for (let r = -1; r < ROUNDS; r++) {
    for (const [pi, p] of loop.entries()) {
      for (let k = 0; k < MODES.length; k++) {
        const mode = MODES[(k + r + 1) % MODES.length]!;
        const ws = sockets[mode];
        const socket = (ws as unknown as { _socket: { bytesRead: number } })._socket; // ws's net.Socket, to count wire bytes
        const compressed = mode === 'frame-L1' && p.frames[0]!.length >= THRESHOLD;
        const row = out.find((o) => o.key === p.key && o.mode === mode)!;
        const settle = 3; // the first frames after switching mode are not counted
        for (let n = -settle; n < perRound[p.key]!; n++) {
          const v = seq++ % VARIANTS;
          const read0 = socket.bytesRead;
          const t0 = now();
          const got = await new Promise<Buffer>((resolve) => {
            ws.once('message', (m: Buffer) => resolve(compressed ? zlib.inflateRawSync(m) : m));
            ws.send(Buffer.from([pi, v]));
          });
          const t1 = now();
          if (got.length !== p.frames[v]!.length) throw new Error(`loopback ${mode} ${p.key}: got ${got.length} bytes`);
          if (r >= 0 && n >= 0) {
            row.samples.push(us(t0, t1));
            row.wire.push(socket.bytesRead - read0);
          }
        }
      }
    }
  }
  for (const ws of Object.values(sockets)) ws.close();
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  return out;
}

// ------------------------------------------------------------------------------------------------ report

const f0 = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const bytes = (n: number) => (n >= MiB ? `${(n / MiB).toFixed(2)} MiB` : n >= KiB ? `${(n / KiB).toFixed(1)} KiB` : `${n} B`);
const LINKS = [
  { name: '100 Mbit/s', bps: 100e6 },
  { name: '1 Gbit/s', bps: 1e9 },
];

function report(results: CpuResult[], loop: LoopResult[]): void {
  console.log(`commy compression bench — ${process.platform}-${process.arch}, Node ${process.version}, zlib ${process.versions.zlib}, brotli ${process.versions.brotli}`);
  console.log(`CPU figures: p50 over interleaved rounds after warm-up, one core, ${VARIANTS} distinct frames per payload in rotation.`);
  console.log('\n### Size and CPU per frame\n');
  console.log('| payload | method | bytes | ratio | compress µs p50 (p99) | decompress µs p50 (p99) | total @100 Mbit/s | total @1 Gbit/s | pays below |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    const none = r.raw;
    for (const m of r.methods) {
      const c = percentile(m.cUs, 50);
      const d = percentile(m.dUs, 50);
      const cpuUs = m.name === 'none' ? 0 : c + d;
      const link = LINKS.map((l) => `${f0((cpuUs + (m.bytes * 8 * 1e6) / l.bps) / 1000)} ms`);
      // Compression pays when the bytes it saves take longer to send than it costs: bandwidth < saved bits / cpu time.
      const saved = none - m.bytes;
      const breakEven = m.name === 'none' ? '—' : saved <= 0 ? 'never' : `${f0((saved * 8) / cpuUs)} Mbit/s`;
      const cpuCol = (xs: number[]) => (m.name === 'none' ? '0' : `${f0(percentile(xs, 50))} (${f0(percentile(xs, 99))})`);
      console.log(`| ${r.payload.name} | ${m.name} | ${m.bytes} | ${(none / m.bytes).toFixed(2)}× | ${cpuCol(m.cUs)} | ${cpuCol(m.dUs)} | ${link[0]} | ${link[1]} | ${breakEven} |`);
    }
    console.log(`| ${r.payload.name} | (for scale: encodeFrame / decodeFrame) | ${bytes(r.raw)} | | ${f0(r.encodeUs)} | ${f0(r.decodeUs)} | | | |`);
  }
  console.log('\n### Loopback WebSocket (ws server in its own process), request → frame, µs per frame\n');
  console.log('| payload | mode | wire bytes | p50 µs | p99 µs | p50 / off p50 |');
  console.log('|---|---|---:|---:|---:|---:|');
  for (const key of LOOP_KEYS) {
    const r = results.find((x) => x.payload.key === key)!;
    const off = percentile(loop.find((l) => l.key === key && l.mode === 'off')!.samples, 50);
    for (const mode of MODES) {
      const { samples: s, wire: w } = loop.find((l) => l.key === key && l.mode === mode)!;
      const wire = percentile(w, 50);
      const p50 = percentile(s, 50);
      const x = p50 / off;
      console.log(`| ${r.payload.name} | ${MODE_NAMES[mode]} | ${wire} | ${f0(p50)} | ${f0(percentile(s, 99))} | ${mode === 'off' ? '—' : `${x.toFixed(2)}×`} |`);
    }
  }
  console.log(`\n(${loop[0]!.samples.length} and ${loop[MODES.length]!.samples.length} frames per mode for (a) and (c); "pays below": link speed under which the bytes saved take longer to send than compress + decompress take.)`);
}

if (process.argv.includes('--server')) {
  await serve();
} else {
  const t0 = Date.now();
  const all = payloads();
  const results: CpuResult[] = [];
  for (const p of all) results.push(await cpu(p));
  const loop = await loopback(all);
  report(results, loop);
  console.log(`\n(run took ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}
