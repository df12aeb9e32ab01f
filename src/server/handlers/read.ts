import { encodeFrame } from '../../protocol/frame-codec.js';
import type { MessageOf } from '../../protocol/messages.js';
import type { Reply, Session } from '../session.js';

/** ReadVariable: one value with its version, read without waiting on another process's lock. */
export async function readVariable(s: Session, m: MessageOf<'ReadVariable'>): Promise<Reply> {
  const { tenant, service, name } = m.body;
  s.check(tenant, service, 'read');
  s.assertName(name, 'variable name');
  const { bytes, version } = await s.withService(tenant, service, ({ file }) => {
    const entry = file.entry(name);
    return s.whenFree(() => file.tryReadCopy(entry), `${tenant}/${service}/${name}`);
  });
  return encodeFrame('VariableValue', m.id, { name, value: bytes, version: Number(version) });
}
