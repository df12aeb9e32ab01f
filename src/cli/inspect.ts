import { inspectFile, type FileReport, type VariableReport } from '../local/file-report.js';

/** `commy inspect FILE [--json]`: what a service file holds, read without locks (docs/operations.md). */
export function printInspect(path: string, json: boolean): void {
  const report = inspectFile(path);
  console.log(json ? JSON.stringify(report, jsonValue, 2) : formatReport(report));
}

function formatReport(r: FileReport): string {
  const live = r.variables.filter((v) => v.state === 'live').length;
  const head = [
    `file       ${printable(r.path)}`,
    `service    ${r.tenant === '' ? '(embedded: no tenant/service recorded)' : printable(`${r.tenant}/${r.service}`)}   id ${r.fileId}`,
    `version    ${r.version}`,
    `variables  ${live} live, ${r.variables.length - live} removed, room for ${r.maxVariables}`,
    `data       ${r.dataEnd} of ${r.dataCapacity} bytes used; file ${r.fileSize} bytes, at most ${r.maxFileSize}`,
    `watchers   ${r.watchers.slots} with a wake channel (${r.watchers.parked} parked), ${r.watchers.fallback} fallback asleep`,
  ];
  if (r.variables.length === 0) return head.join('\n');
  const rows = r.variables.map((v) => [String(v.index), printable(v.name), v.type, String(v.offset), String(v.size), String(v.version), String(v.lastWriter || '-'), describe(v)]);
  return [...head, '', ...table(['#', 'name', 'type', 'offset', 'size', 'version', 'writer', 'value'], rows)].join('\n');
}

/**
 * Text from the file (or a path) as it may reach a terminal: control characters escaped as `\u001b`. The header's
 * tenant and service are whatever a process that can write the file put there, unchecked; an escape sequence
 * printed raw could retitle the terminal, clear it, or forge lines of this report.
 */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function describe(v: VariableReport): string {
  if (v.state === 'removed') return '(removed)';
  const text = v.value === 'busy' ? '(being written)' : show(v.value);
  return v.torn ? `${text} (TORN: a writer died mid-write)` : text;
}

/** A value on one line: bytes in hex (the first 32), strings quoted, both cut short; a struct's fields as `{x: 1.5, y: 2}`. */
function show(value: unknown): string {
  if (typeof value === 'object' && value !== null && !(value instanceof Uint8Array)) {
    return `{${Object.entries(value).map(([field, v]) => `${field}: ${show(v)}`).join(', ')}}`;
  }
  if (value instanceof Uint8Array) {
    const hex = Buffer.from(value.subarray(0, 32)).toString('hex');
    return value.length > 32 ? `0x${hex}… (${value.length} bytes)` : `0x${hex}`;
  }
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  return String(value);
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)];
}

/** JSON: bigints as decimal strings, bytes as hex. */
function jsonValue(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  return value;
}
