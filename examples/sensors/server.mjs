// `node examples/sensors/server.mjs`: the commy server the producer writes through (see producer.mjs).
import { startDemoServer } from '../demo-server.mjs';

await startDemoServer();
