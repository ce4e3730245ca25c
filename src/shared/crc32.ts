// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), table-driven. Node 20 has no zlib.crc32,
// and the event log needs a checksum per record to tell a torn or corrupt tail from good data.

const CRC32_TABLE: Uint32Array = buildTable();

function buildTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
    table[byte] = crc >>> 0;
  }
  return table;
}

/** CRC-32 of `bytes` as an unsigned 32-bit number; pass a previous result as `seed` to continue it. */
export function crc32(bytes: Uint8Array, seed = 0): number {
  let crc = ~seed >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    // Both indices are in range by construction (0..255 and 0..length-1).
    crc = CRC32_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  }
  return ~crc >>> 0;
}
