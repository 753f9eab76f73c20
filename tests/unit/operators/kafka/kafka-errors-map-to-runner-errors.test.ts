/**
 * kafkajs errors become RunnerErrors: only errors about the message itself (too large, invalid
 * topic) are non-retryable rejections; everything else is retried, including what kafkajs calls
 * non-retriable because its own retries ran out or the producer is disconnecting.
 */
import kafkajs from 'kafkajs';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { isRetryable } from '../../../../core/errors.ts';
import { kafkaErrorType, kafkaLogEntry, toRunnerError } from '../../../../operators/kafka/client.ts';

const { KafkaJSProtocolError, KafkaJSNumberOfRetriesExceeded, KafkaJSNonRetriableError, KafkaJSConnectionError, KafkaJSSASLAuthenticationError, logLevel } =
  kafkajs as unknown as Record<string, any>;

const protocol = (type: string, retriable: boolean) => new KafkaJSProtocolError({ message: `broker says ${type}`, type, code: 1, retriable });

describe('kafka error mapping', () => {
  it('rejects messages that are too large or go to an invalid topic, without retry', () => {
    for (const type of ['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_TOPIC_EXCEPTION', 'INVALID_RECORD']) {
      const err = toRunnerError(protocol(type, false), 'writing');
      expect(err.code).toBe('WRITE_REJECTED');
      expect(err.retryable).toBe(false);
      expect(isRetryable(err)).toBe(false);
    }
  });

  it('finds the real error inside "retries exceeded" and keeps retrying what can heal', () => {
    const leader = new KafkaJSNumberOfRetriesExceeded(protocol('LEADER_NOT_AVAILABLE', true), { retryCount: 5, retryTime: 1000 });
    const err = toRunnerError(leader, 'writing');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain('LEADER_NOT_AVAILABLE');
    expect(kafkaErrorType(err)).toBe('LEADER_NOT_AVAILABLE');

    const tooLarge = new KafkaJSNumberOfRetriesExceeded(protocol('MESSAGE_TOO_LARGE', false), { retryCount: 0, retryTime: 0 });
    expect(toRunnerError(tooLarge, 'writing').code).toBe('WRITE_REJECTED');
  });

  it('keeps an unknown topic retryable: only a metadata check may call it missing', () => {
    const err = toRunnerError(protocol('UNKNOWN_TOPIC_OR_PARTITION', true), 'writing');
    expect(err.retryable).toBe(true);
    expect(kafkaErrorType(err)).toBe('UNKNOWN_TOPIC_OR_PARTITION');
  });

  it('retries connection, authorisation and shutdown errors instead of dead-lettering data', () => {
    const conn = toRunnerError(new KafkaJSConnectionError('connect ECONNREFUSED 127.0.0.1:9092'), 'connecting');
    expect(conn.code).toBe('CONNECTION_FAILED');
    expect(conn.retryable).toBe(true);
    const auth = toRunnerError(protocol('TOPIC_AUTHORIZATION_FAILED', false), 'writing');
    expect(auth.code).toBe('AUTH_FAILED');
    expect(auth.retryable).toBe(true);
    expect(toRunnerError(new KafkaJSSASLAuthenticationError('bad password'), 'connecting').code).toBe('AUTH_FAILED');
    const closing = toRunnerError(new KafkaJSNonRetriableError("The producer is disconnecting; therefore, it can't safely accept messages anymore"), 'writing');
    expect(closing.retryable).toBe(true);
  });

  it('routes kafkajs logs into pino, quieting what kafkajs handles itself', () => {
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    const entry = kafkaLogEntry(logger);
    const log = (namespace: string, level: number, message: string) => entry({ namespace, level, label: '', log: { message, timestamp: '' } as never });
    log('Connection', logLevel.ERROR, 'Response Metadata(key: 3, version: 6)');
    log('Runner', logLevel.WARN, 'The group is rebalancing, re-joining');
    log('Consumer', logLevel.ERROR, 'Crash: KafkaJSNumberOfRetriesExceeded');
    log('Consumer', logLevel.INFO, 'Consumer has joined the group');
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [20, 'Response Metadata(key: 3, version: 6)'],
      [30, 'The group is rebalancing, re-joining'],
      [50, 'Crash: KafkaJSNumberOfRetriesExceeded'],
      [30, 'Consumer has joined the group'],
    ]);
  });
});
