/**
 * The websocket_server output writes each broadcast message as one pre-built frame to every
 * client's socket; ws's own frame parser (what a client runs) must read it back as the same text
 * message, for each of the three length encodings.
 */
import { describe, expect, it } from 'vitest';
import type { Writable } from 'node:stream';
import * as ws from 'ws';
import { textFrame } from '../../../../operators/websocket/server-output.ts';

// ws's frame parser; the package exports it, its type declarations do not.
const { Receiver } = ws as unknown as { Receiver: new (opts: { isServer: boolean }) => Writable };

function parse(frames: Buffer[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const got: string[] = [];
    const receiver = new Receiver({ isServer: false });
    receiver.on('message', (data: Buffer, isBinary: boolean) => {
      expect(isBinary).toBe(false);
      got.push(data.toString('utf8'));
      if (got.length === frames.length) resolve(got);
    });
    receiver.on('error', reject);
    // All frames in one chunk, as a corked socket sends them.
    receiver.write(Buffer.concat(frames));
  });
}

describe('textFrame', () => {
  it.each([0, 5, 125, 126, 200, 65535, 65536, 70000])('a %i-byte payload reads back as the same text message', async (n) => {
    const text = JSON.stringify({ type: 'message', data: 'x'.repeat(Math.max(0, n - 30)) }).padEnd(n, ' ').slice(0, n);
    const [got] = await parse([textFrame(Buffer.from(text, 'utf8'))]);
    expect(got).toBe(text);
  });

  it('several frames written back to back read back as separate messages in order', async () => {
    const texts = ['{"n":1}', 'é'.repeat(100), '{"n":3}'];
    expect(await parse(texts.map((t) => textFrame(Buffer.from(t, 'utf8'))))).toEqual(texts);
  });

  it('a frame built from several parts (text and bytes) reads back as their concatenation', async () => {
    const data = Buffer.from('{"t":"äö","pad":"' + 'x'.repeat(300) + '"}', 'utf8');
    const [got] = await parse([textFrame('{"type":"message","topic":"é","data":', data, '}')]);
    expect(got).toBe(`{"type":"message","topic":"é","data":${data.toString('utf8')}}`);
  });
});
