// `node examples/sensors/producer.mjs`: a sensor writing 1,000 samples a second into the service "sensors".
// On the server's machine the client maps the service file (mode 'local'): each write is a store into shared
// memory, no network hop; the inspector (a browser, remote) sees the values change live.
import { AuthCredentials, Client, VariableMetadata, VariableType } from 'commy';
import { DEMO } from '../demo-server.mjs';

const RATE = 1000; // samples per second
const client = await Client.initialize(DEMO.url, DEMO.tenant, AuthCredentials.apiKey(DEMO.key));
const vf = await client.getVirtualServiceFile(DEMO.tenant, 'sensors');
for (const meta of [
  new VariableMetadata('temperature', -1, 8, VariableType.F64),
  new VariableMetadata('pressure', -1, 8, VariableType.F64),
  new VariableMetadata('rpm', -1, 4, VariableType.U32),
  new VariableMetadata('samples', -1, 8, VariableType.U64),
  VariableMetadata.struct('vibration', { x: VariableType.F32, y: VariableType.F32, z: VariableType.F32 }),
]) {
  await vf.registerVariable(meta); // the same layout again is a no-op: restarting the producer is fine
}
const temperature = vf.handle('temperature');
const pressure = vf.handle('pressure');
const rpm = vf.handle('rpm');
const samples = vf.handle('samples');
const vibration = vf.handle('vibration');
console.log(`producer: mode ${vf.mode}${vf.filePath ? ` (${vf.filePath})` : ''}, ${RATE} samples/s; Ctrl-C to stop`);

const start = performance.now();
let written = 0;
let lastReport = start;
const tick = () => {
  // Catch up to RATE × elapsed: timers fire about once a millisecond, never exactly.
  const due = Math.floor(((performance.now() - start) * RATE) / 1000);
  for (; written < due; written++) {
    const t = written / RATE;
    temperature.set(21 + 3 * Math.sin(t / 4) + (Math.random() - 0.5) * 0.2);
    pressure.set(1013 + 8 * Math.sin(t / 9));
    rpm.set(Math.round(1500 + 400 * Math.sin(t)));
    vibration.set({ x: Math.sin(t * 50) * 0.1, y: Math.cos(t * 37) * 0.1, z: (Math.random() - 0.5) * 0.02 });
    samples.set(BigInt(written + 1));
  }
  if (vf.mode === 'remote') void vf.flush(); // a remote client sends what changed (local writes are already shared)
  const now = performance.now();
  if (now - lastReport >= 5000) {
    console.log(`producer: ${written} samples (${((written * 1000) / (now - start)).toFixed(0)}/s)`);
    lastReport = now;
  }
};
const timer = setInterval(tick, 1);
process.once('SIGINT', async () => {
  clearInterval(timer);
  await client.close();
  process.exit(0);
});
