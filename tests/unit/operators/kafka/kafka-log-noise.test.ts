import kafkajs from 'kafkajs';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { kafkaLogEntry } from '../../../../operators/kafka/client.ts';

const { logLevel } = kafkajs;

describe('kafkajs logs', () => {
  it('logs a refused connection once per 30 s at warn (the rest at debug) and other errors at error', () => {
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    let t = 0;
    const entry = kafkaLogEntry(logger, () => t);
    const refused = (port: number) => entry({ namespace: 'Connection', level: logLevel.ERROR, label: 'ERROR', log: { message: `Connection error: connect ECONNREFUSED 127.0.0.1:${port}`, timestamp: '' } } as never);
    for (let i = 0; i < 5; i++) {
      refused(9092);
      t += 1000;
    }
    t += 30_000;
    refused(9092);
    entry({ namespace: 'Producer', level: logLevel.ERROR, label: 'ERROR', log: { message: 'Something else broke', timestamp: '' } } as never);
    expect(lines.map((l) => l.level)).toEqual([40, 20, 20, 20, 20, 40, 50]);
    expect(lines[0]!.msg).toMatch(/ECONNREFUSED .*repeats of this are logged at debug for 30 s/);
  });
});
