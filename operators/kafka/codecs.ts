/**
 * The compression codecs kafkajs leaves to plug-ins, registered once per process, all without a
 * native build: snappy (kafkajs-snappy on snappyjs; reads Java's xerial framing too), lz4 (lz4js,
 * the LZ4 frame format Kafka uses) and zstd (@bokuweb/zstd-wasm, WebAssembly). gzip is built in.
 * The kafka input needs them to read batches other producers compressed; the output to write them.
 */
import * as zstd from '@bokuweb/zstd-wasm';
import kafkajs from 'kafkajs';
import snappyCodec from 'kafkajs-snappy';
import lz4 from 'lz4js';
import xxh32 from 'lz4js/xxh32.js';

const { CompressionCodecs, CompressionTypes } = kafkajs;

let ready: Promise<void> | null = null;

export function registerCodecs(): Promise<void> {
  ready ??= (async () => {
    await zstd.init();
    CompressionCodecs[CompressionTypes.Snappy] = snappyCodec;
    CompressionCodecs[CompressionTypes.LZ4] = () => ({
      compress: async (encoder: { buffer: Buffer }) => lz4Frame(encoder.buffer),
      decompress: async (buffer: Buffer) => Buffer.from(lz4.decompress(buffer)),
    });
    CompressionCodecs[CompressionTypes.ZSTD] = () => ({
      compress: async (encoder: { buffer: Buffer }) => Buffer.from(zstd.compress(encoder.buffer, 3)),
      decompress: async (buffer: Buffer) => Buffer.from(zstd.decompress(buffer)),
    });
  })();
  return ready;
}

/** lz4js's largest block: a batch up to this size is one block. */
const LZ4_BLOCK = 4 * 1024 * 1024;

/**
 * An LZ4 frame Kafka accepts. Kafka reads only frames whose blocks are marked independent;
 * lz4js does not set that flag. A batch of at most one block (4 MiB) has no block to depend on, so
 * the flag is set and the header checksum written again. Larger batches are refused (batching
 * byte_size is far below that by default).
 */
function lz4Frame(data: Buffer): Buffer {
  if (data.length > LZ4_BLOCK) throw new Error(`lz4: a batch of ${data.length} bytes is larger than one LZ4 block (4 MiB); lower batching.byte_size`);
  const frame = Buffer.from(lz4.compress(data));
  frame[4] = frame[4]! | 0x20; // FLG: block independence
  frame[6] = (xxh32.hash(0, frame, 4, 2) >>> 8) & 0xff; // HC: second byte of xxh32(descriptor)
  return frame;
}

export const COMPRESSION = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
} as const;
