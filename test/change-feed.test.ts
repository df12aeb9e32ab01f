import { join } from 'node:path';
import { VariableMetadata } from '../src/core/variable-metadata.js';
import { VariableType } from '../src/core/variable-type.js';
import { ServiceFile } from '../src/local/service-file.js';
import { localChangeFeed } from '../src/server/local-change-feed.js';
import { changeFeedContract } from './helpers/change-feed-contract.js';
import { startChild } from './helpers/child.js';
import { tempDir } from './helpers/temp.js';

/** The local futex feed against the ChangeFeed contract; another process writes through its own mapping. */
changeFeedContract('local', async (t) => {
  const path = join(tempDir(t), 'feed.mem');
  const file = ServiceFile.open(path, { create: true });
  const names = ['counter', 'other'] as const;
  for (const name of names) file.register(new VariableMetadata(name, -1, 8, VariableType.U64));
  const feed = localChangeFeed(file, 'acme/feed');
  const harness = {
    feed,
    names,
    write: (name: string, value: bigint) => file.write(file.entry(name), value),
    versionOf: (name: string) => (file.refresh(), file.entryVersion(file.entry(name))),
    async writeElsewhere(name: string, count: number) {
      if (name !== 'counter') throw new Error('the counter fixture writes `counter` only');
      const child = startChild('counter', [path, String(count)], t);
      await child.next('ready');
      child.send({ type: 'go' });
      await child.next('done');
      await child.exited;
    },
    close() {
      feed.close();
      file.close();
    },
  };
  t.after(() => harness.close());
  return harness;
});
