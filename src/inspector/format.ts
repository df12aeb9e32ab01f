import { CommyError, ErrorCode } from '../core/errors.js';
import { VariableType, type VariableTypeId } from '../core/variable-type.js';

/**
 * Values as the inspector shows them, and text typed into an edit field as the value to set. Pure functions:
 * no DOM, so they are tested in Node.
 */

/** A value as any variable may hold it, structs (plain objects of fields) included. */
export type ShownValue = number | bigint | boolean | string | Uint8Array | { readonly [field: string]: unknown };

const HEX_SHOWN = 32;

function hex(bytes: Uint8Array, limit: number): string {
  let out = '';
  for (let i = 0; i < Math.min(bytes.length, limit); i++) out += bytes[i]!.toString(16).padStart(2, '0');
  return bytes.length > limit ? `${out}… (${bytes.length} bytes)` : out;
}

/** One line of text for a value: numbers as they are, strings quoted, bytes in hex, structs as `field: value`. */
export function formatValue(value: unknown): string {
  if (value instanceof Uint8Array) return hex(value, HEX_SHOWN);
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(9)));
  if (typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value as Record<string, unknown>).map(([k, v]) => `${k}: ${formatValue(v)}`).join(', ');
  }
  return String(value);
}

/** A value for the table: a struct one field a line (the cell keeps line breaks), anything else as formatValue. */
export function formatCell(value: unknown): string {
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return formatValue(value);
  return Object.entries(value as Record<string, unknown>).map(([k, v]) => `${k}: ${formatValue(v)}`).join('\n');
}

/** The number a sparkline plots, or undefined for a value that is not one. */
export function numericOf(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'boolean') return value ? 1 : 0;
  return undefined;
}

function invalid(text: string, what: string): CommyError {
  return new CommyError(ErrorCode.TYPE_MISMATCH, `${JSON.stringify(text.slice(0, 40))} is not ${what}`);
}

function parseInteger(text: string, big: boolean): number | bigint {
  const t = text.trim();
  if (!/^[-+]?(0x[0-9a-f]+|\d+)$/i.test(t)) throw invalid(text, 'an integer');
  const n = BigInt(t.startsWith('-') ? `-${t.slice(1).replace(/^\+/, '')}` : t.replace(/^\+/, ''));
  return big ? n : Number(n);
}

function parseBytes(text: string): Uint8Array {
  const t = text.trim().replace(/^0x/i, '').replace(/\s+/g, '');
  if (t.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(t)) throw invalid(text, 'bytes in hex');
  const out = new Uint8Array(t.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * What `text` means for a variable of `typeId` whose value is now `current` (a struct's fields take the kind
 * of their current value: a bigint field stays a bigint). TYPE_MISMATCH for text that is not such a value;
 * range checks are the variable's own (vf.set).
 */
export function parseValue(text: string, typeId: VariableTypeId | number, current: unknown): ShownValue {
  switch (typeId) {
    case VariableType.U64:
    case VariableType.I64:
      return parseInteger(text, true);
    case VariableType.U32:
    case VariableType.I32:
    case VariableType.U16:
    case VariableType.I16:
    case VariableType.U8:
    case VariableType.I8:
      return parseInteger(text, false);
    case VariableType.F64:
    case VariableType.F32: {
      const n = Number(text.trim());
      if (text.trim() === '' || Number.isNaN(n)) throw invalid(text, 'a number');
      return n;
    }
    case VariableType.Bool: {
      const t = text.trim().toLowerCase();
      if (t === 'true' || t === '1') return true;
      if (t === 'false' || t === '0') return false;
      throw invalid(text, 'true or false');
    }
    case VariableType.String:
      return text;
    case VariableType.Bytes:
      return parseBytes(text);
    default:
      return parseFields(text, current);
  }
}

/** A struct's new value: JSON of its fields (`{"x": 1.5}`; fields left out keep their current value). */
function parseFields(text: string, current: unknown): ShownValue {
  if (typeof current !== 'object' || current === null || current instanceof Uint8Array) throw invalid(text, 'a value this inspector can edit');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalid(text, 'JSON of the fields, e.g. {"x": 1.5}');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalid(text, 'an object of fields');
  const out: Record<string, unknown> = { ...(current as Record<string, unknown>) };
  for (const [field, v] of Object.entries(parsed as Record<string, unknown>)) {
    // Own fields only: `in` also found what every object inherits (`constructor`, `toString`, `__proto__`, whose
    // assignment below swapped `out`'s prototype and was then written as "no change", with a ✓).
    if (!Object.hasOwn(out, field)) throw invalid(text, `a value for these fields (${Object.keys(out).join(', ')})`);
    out[field] = typeof out[field] === 'bigint' && (typeof v === 'number' || typeof v === 'string') ? BigInt(v) : v;
  }
  return out;
}

/**
 * An error as one line: `CODE: message` for a CommyError. (By its `code`, not instanceof: the inspector's
 * bundle and /client.js each have their own copy of the class.)
 */
export function describeError(err: unknown): string {
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') return `${(err as Error & { code: string }).code}: ${err.message}`;
  return String(err);
}

/** "3 s ago", "2 min ago": when a variable last changed, as the table shows it. */
export function ago(ms: number): string {
  if (ms < 1000) return 'just now';
  if (ms < 60_000) return `${Math.floor(ms / 1000)} s ago`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ago`;
  return `${Math.floor(ms / 3_600_000)} h ago`;
}
