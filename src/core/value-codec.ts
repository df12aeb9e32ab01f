import { CommyError, ErrorCode } from './errors.js';
import { VariableType, typeName, type VariableTypeId, type VariableValue } from './variable-type.js';

/**
 * Typed access to one variable's bytes. `check` validates a value and returns it in the form `store` takes
 * (so nothing is written unless the whole value is valid); `load` decodes. Little-endian throughout.
 */
export interface ValueCodec {
  readonly typeId: VariableTypeId;
  readonly size: number;
  check(value: unknown): unknown;
  store(view: DataView, offset: number, checked: unknown): void;
  load(view: DataView, offset: number): VariableValue;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

function mismatch(typeId: VariableTypeId, value: unknown): CommyError {
  const got = value instanceof Uint8Array ? 'Uint8Array' : typeof value;
  return new CommyError(ErrorCode.TYPE_MISMATCH, `a ${typeName(typeId)} variable cannot take a ${got}`);
}

function tooLarge(typeId: VariableTypeId, value: unknown): CommyError {
  return new CommyError(ErrorCode.VALUE_TOO_LARGE, `${String(value)} is out of range for ${typeName(typeId)}`);
}

function intCodec(
  typeId: VariableTypeId,
  size: number,
  min: number,
  max: number,
  get: (v: DataView, o: number) => number,
  set: (v: DataView, o: number, x: number) => void,
): ValueCodec {
  return {
    typeId,
    size,
    check(value) {
      let n = value;
      if (typeof n === 'bigint') n = Number(n);
      if (typeof n !== 'number' || !Number.isInteger(n)) throw mismatch(typeId, value);
      if (n < min || n > max) throw tooLarge(typeId, value);
      return n;
    },
    store: (view, offset, checked) => set(view, offset, checked as number),
    load: (view, offset) => get(view, offset),
  };
}

function bigCodec(typeId: VariableTypeId, signed: boolean): ValueCodec {
  const min = signed ? -(1n << 63n) : 0n;
  const max = signed ? (1n << 63n) - 1n : (1n << 64n) - 1n;
  return {
    typeId,
    size: 8,
    check(value) {
      let n: bigint;
      if (typeof value === 'bigint') n = value;
      else if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
      else throw mismatch(typeId, value);
      if (n < min || n > max) throw tooLarge(typeId, value);
      return n;
    },
    store: signed
      ? (view, offset, checked) => view.setBigInt64(offset, checked as bigint, true)
      : (view, offset, checked) => view.setBigUint64(offset, checked as bigint, true),
    load: signed ? (view, offset) => view.getBigInt64(offset, true) : (view, offset) => view.getBigUint64(offset, true),
  };
}

function floatCodec(typeId: VariableTypeId, size: 4 | 8): ValueCodec {
  return {
    typeId,
    size,
    check(value) {
      if (typeof value !== 'number') throw mismatch(typeId, value);
      return value;
    },
    store:
      size === 8
        ? (view, offset, checked) => view.setFloat64(offset, checked as number, true)
        : (view, offset, checked) => view.setFloat32(offset, checked as number, true),
    load: size === 8 ? (view, offset) => view.getFloat64(offset, true) : (view, offset) => view.getFloat32(offset, true),
  };
}

function bytesCodec(size: number): ValueCodec {
  return {
    typeId: VariableType.Bytes,
    size,
    check(value) {
      if (!(value instanceof Uint8Array)) throw mismatch(VariableType.Bytes, value);
      if (value.length > size) {
        throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `${value.length} bytes do not fit a ${size}-byte variable`);
      }
      return value;
    },
    store(view, offset, checked) {
      writePadded(view, offset, size, checked as Uint8Array);
    },
    load: (view, offset) => new Uint8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + size)),
  };
}

function stringCodec(size: number): ValueCodec {
  return {
    typeId: VariableType.String,
    size,
    check(value) {
      if (typeof value !== 'string') throw mismatch(VariableType.String, value);
      const bytes = encoder.encode(value);
      if (bytes.length > size) {
        throw new CommyError(ErrorCode.VALUE_TOO_LARGE, `the string takes ${bytes.length} UTF-8 bytes; capacity is ${size}`);
      }
      return bytes;
    },
    store(view, offset, checked) {
      writePadded(view, offset, size, checked as Uint8Array);
    },
    load(view, offset) {
      const all = new Uint8Array(view.buffer, view.byteOffset + offset, size);
      const nul = all.indexOf(0);
      // Copy first: decoding straight from shared memory could see a concurrent change mid-decode.
      return decoder.decode(all.slice(0, nul < 0 ? size : nul));
    },
  };
}

/** Writes `value` then zero-fills the rest of the variable, so a shorter value never leaves stale bytes. */
function writePadded(view: DataView, offset: number, size: number, value: Uint8Array): void {
  const target = new Uint8Array(view.buffer, view.byteOffset + offset, size);
  target.set(value);
  if (value.length < size) target.fill(0, value.length);
}

const boolCodec: ValueCodec = {
  typeId: VariableType.Bool,
  size: 1,
  check(value) {
    if (typeof value !== 'boolean') throw mismatch(VariableType.Bool, value);
    return value;
  },
  store: (view, offset, checked) => view.setUint8(offset, checked ? 1 : 0),
  load: (view, offset) => view.getUint8(offset) !== 0,
};

/** The codec for a variable of this scalar type and size (size already validated against the type); a Struct's is codecOf's. */
export function codecFor(typeId: VariableTypeId, size: number): ValueCodec {
  switch (typeId) {
    case VariableType.Bytes:
      return bytesCodec(size);
    case VariableType.String:
      return stringCodec(size);
    case VariableType.U64:
      return bigCodec(typeId, false);
    case VariableType.I64:
      return bigCodec(typeId, true);
    case VariableType.F64:
      return floatCodec(typeId, 8);
    case VariableType.F32:
      return floatCodec(typeId, 4);
    case VariableType.U32:
      return intCodec(typeId, 4, 0, 0xffffffff, (v, o) => v.getUint32(o, true), (v, o, x) => v.setUint32(o, x, true));
    case VariableType.I32:
      return intCodec(typeId, 4, -0x80000000, 0x7fffffff, (v, o) => v.getInt32(o, true), (v, o, x) => v.setInt32(o, x, true));
    case VariableType.U16:
      return intCodec(typeId, 2, 0, 0xffff, (v, o) => v.getUint16(o, true), (v, o, x) => v.setUint16(o, x, true));
    case VariableType.I16:
      return intCodec(typeId, 2, -0x8000, 0x7fff, (v, o) => v.getInt16(o, true), (v, o, x) => v.setInt16(o, x, true));
    case VariableType.U8:
      return intCodec(typeId, 1, 0, 0xff, (v, o) => v.getUint8(o), (v, o, x) => v.setUint8(o, x));
    case VariableType.I8:
      return intCodec(typeId, 1, -0x80, 0x7f, (v, o) => v.getInt8(o), (v, o, x) => v.setInt8(o, x));
    case VariableType.Bool:
      return boolCodec;
    case VariableType.Struct:
      throw new CommyError(ErrorCode.TYPE_MISMATCH, 'a Struct is typed by its fields: use codecOf(meta) (struct-codec.ts)');
    default:
      throw new CommyError(ErrorCode.TYPE_MISMATCH, `unknown type id ${String(typeId)}`);
  }
}
