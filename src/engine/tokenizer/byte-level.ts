// GPT-2's byte-level alphabet: every byte maps to one printable Unicode character, so BPE vocabularies
// (Llama 3, Qwen, GPT-2) store tokens as text. Printable Latin-1 bytes map to themselves; the other
// 68 bytes (controls, space, 0x7f–0xa0, 0xad) map to U+0100 upwards in byte order.

function isPrintableByte(byte: number): boolean {
  return (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
}

export const BYTE_TO_CHAR: readonly string[] = (() => {
  const chars: string[] = [];
  let next = 0x100;
  for (let byte = 0; byte < 256; byte++) chars.push(String.fromCodePoint(isPrintableByte(byte) ? byte : next++));
  return chars;
})();

export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((char, byte) => [char, byte]));

const utf8 = new TextEncoder();

/** UTF-8 bytes of `text`, each as its byte-level character. */
export function textToByteLevel(text: string): string {
  let out = "";
  for (const byte of utf8.encode(text)) out += BYTE_TO_CHAR[byte]!;
  return out;
}

/** The bytes a byte-level token stands for; characters outside the alphabet become their UTF-8 bytes. */
export function byteLevelToBytes(token: string): Uint8Array {
  const bytes: number[] = [];
  for (const char of token) {
    const byte = CHAR_TO_BYTE.get(char);
    if (byte !== undefined) bytes.push(byte);
    else for (const raw of utf8.encode(char)) bytes.push(raw);
  }
  return Uint8Array.from(bytes);
}
