// `node examples/ecs/simulation.mjs`: an ECS-style world in the service "world". Each entity is two struct
// variables, `Position.<id>` and `Velocity.<id>` (the ECS seed's components); one process moves every entity
// each tick through the mapped file (mode 'local' on the server's machine), and the page follows all positions
// with one `vf.signalMap('Position.*')`.
import { AuthCredentials, Client, VariableMetadata, VariableType } from 'commy';
import { DEMO } from '../demo-server.mjs';

const ENTITIES = Number(process.argv[2] ?? 40);
const TICK_MS = 1000 / 30;
const WORLD = { w: 800, h: 500 };
const Vec = { x: VariableType.F32, y: VariableType.F32 };

const client = await Client.initialize(DEMO.url, DEMO.tenant, AuthCredentials.apiKey(DEMO.key));
const vf = await client.getVirtualServiceFile(DEMO.tenant, 'world');
const entities = [];
for (let id = 0; id < ENTITIES; id++) {
  await vf.registerVariable(VariableMetadata.struct(`Position.${id}`, Vec));
  await vf.registerVariable(VariableMetadata.struct(`Velocity.${id}`, Vec));
  const position = vf.handle(`Position.${id}`);
  const velocity = vf.handle(`Velocity.${id}`);
  position.set({ x: Math.random() * WORLD.w, y: Math.random() * WORLD.h });
  const angle = Math.random() * 2 * Math.PI;
  const speed = 40 + Math.random() * 120;
  velocity.set({ x: Math.cos(angle) * speed, y: Math.sin(angle) * speed });
  entities.push({ position, velocity });
}
console.log(`simulation: ${ENTITIES} entities in mode ${vf.mode}, ${Math.round(1000 / TICK_MS)} ticks/s; Ctrl-C to stop`);

/** The movement system: position += velocity × dt, bouncing off the walls. */
function step(dt) {
  for (const { position, velocity } of entities) {
    const p = position.get();
    const v = velocity.get();
    let { x, y } = { x: p.x + v.x * dt, y: p.y + v.y * dt };
    let { x: vx, y: vy } = v;
    if (x < 0 || x > WORLD.w) { vx = -vx; x = Math.min(Math.max(x, 0), WORLD.w); }
    if (y < 0 || y > WORLD.h) { vy = -vy; y = Math.min(Math.max(y, 0), WORLD.h); }
    position.set({ x, y });
    if (vx !== v.x || vy !== v.y) velocity.set({ x: vx, y: vy });
  }
  if (vf.mode === 'remote') void vf.flush();
}

let last = performance.now();
const timer = setInterval(() => {
  const now = performance.now();
  step((now - last) / 1000);
  last = now;
}, TICK_MS);
process.once('SIGINT', async () => {
  clearInterval(timer);
  await client.close();
  process.exit(0);
});
