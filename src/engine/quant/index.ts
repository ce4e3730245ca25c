// Plain-TypeScript reference codecs for the tensor types the engine supports. They define what the
// native kernels must compute (tests compare against dequantize) and build test fixtures (quantize).
import { GgmlType, ggmlRowSizeBytes, ggmlTypeName } from "../gguf/ggml-types.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "./half.ts";
import {
  dequantizeQ4_0,
  dequantizeQ4_1,
  dequantizeQ5_0,
  dequantizeQ5_1,
  dequantizeQ8_0,
  quantizeQ4_0,
  quantizeQ4_1,
  quantizeQ5_0,
  quantizeQ5_1,
  quantizeQ8_0,
} from "./legacy-quants.ts";
import { dequantizeQ4_K, dequantizeQ5_K, dequantizeQ6_K, quantizeQ4_K, quantizeQ5_K, quantizeQ6_K } from "./k-quants.ts";

export * from "./half.ts";
export * from "./legacy-quants.ts";
export * from "./k-quants.ts";

interface Codec {
  quantize(values: Float32Array): Uint8Array;
  dequantize(data: Uint8Array, elementCount: number): Float32Array;
}

function quantizeF32(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
}

function dequantizeF32(data: Uint8Array, elementCount: number): Float32Array {
  const out = new Float32Array(elementCount);
  new Uint8Array(out.buffer).set(data.subarray(0, elementCount * 4));
  return out;
}

function halfCodec(toBits: (value: number) => number, fromBits: (bits: number) => number): Codec {
  return {
    quantize(values) {
      const bits = new Uint16Array(values.length);
      for (let index = 0; index < values.length; index++) bits[index] = toBits(values[index]!);
      return new Uint8Array(bits.buffer);
    },
    dequantize(data, elementCount) {
      const out = new Float32Array(elementCount);
      for (let index = 0; index < elementCount; index++) out[index] = fromBits(data[2 * index]! | (data[2 * index + 1]! << 8));
      return out;
    },
  };
}

const CODECS: ReadonlyMap<GgmlType, Codec> = new Map<GgmlType, Codec>([
  [GgmlType.F32, { quantize: quantizeF32, dequantize: dequantizeF32 }],
  [GgmlType.F16, halfCodec(f32ToF16Bits, f16BitsToF32)],
  [GgmlType.BF16, halfCodec(f32ToBf16Bits, bf16BitsToF32)],
  [GgmlType.Q4_0, { quantize: quantizeQ4_0, dequantize: dequantizeQ4_0 }],
  [GgmlType.Q4_1, { quantize: quantizeQ4_1, dequantize: dequantizeQ4_1 }],
  [GgmlType.Q5_0, { quantize: quantizeQ5_0, dequantize: dequantizeQ5_0 }],
  [GgmlType.Q5_1, { quantize: quantizeQ5_1, dequantize: dequantizeQ5_1 }],
  [GgmlType.Q8_0, { quantize: quantizeQ8_0, dequantize: dequantizeQ8_0 }],
  [GgmlType.Q4_K, { quantize: quantizeQ4_K, dequantize: dequantizeQ4_K }],
  [GgmlType.Q5_K, { quantize: quantizeQ5_K, dequantize: dequantizeQ5_K }],
  [GgmlType.Q6_K, { quantize: quantizeQ6_K, dequantize: dequantizeQ6_K }],
]);

/** Types with a reference codec here (and therefore the types the engine supports). */
export const QUANT_TYPES_SUPPORTED: readonly GgmlType[] = [...CODECS.keys()];

function codecFor(type: GgmlType): Codec {
  const codec = CODECS.get(type);
  if (codec === undefined) throw new Error(`no reference codec for ggml type ${ggmlTypeName(type)}`);
  return codec;
}

/** Encodes `values` as `type`; the length must be a whole number of blocks. */
export function quantize(type: GgmlType, values: Float32Array): Uint8Array {
  ggmlRowSizeBytes(type, values.length);
  return codecFor(type).quantize(values);
}

/** Decodes `elementCount` elements of `type` from the start of `data`. */
export function dequantize(type: GgmlType, data: Uint8Array, elementCount: number): Float32Array {
  const sizeBytes = ggmlRowSizeBytes(type, elementCount);
  if (data.length < sizeBytes) {
    throw new RangeError(`${ggmlTypeName(type)}: ${elementCount} elements need ${sizeBytes} bytes, got ${data.length}`);
  }
  return codecFor(type).dequantize(data, elementCount);
}
