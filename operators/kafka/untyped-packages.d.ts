// Untyped compression packages used by operators/kafka/codecs.ts.
declare module 'kafkajs-snappy' {
  const codec: () => { compress(encoder: { buffer: Buffer }): Promise<Buffer>; decompress(buffer: Buffer): Promise<Buffer> };
  export default codec;
}
declare module 'lz4js' {
  export function compress(data: Uint8Array): Uint8Array;
  export function decompress(data: Uint8Array): Uint8Array;
  const lz4: { compress: typeof compress; decompress: typeof decompress };
  export default lz4;
}
declare module 'lz4js/xxh32.js' {
  const xxh32: { hash(seed: number, data: Uint8Array, offset: number, length: number): number };
  export default xxh32;
}
