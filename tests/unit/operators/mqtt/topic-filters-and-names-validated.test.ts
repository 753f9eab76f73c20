import { describe, expect, it } from 'vitest';
import { parseShared, topicFilterProblem, topicMatches, topicNameProblem } from '../../../../operators/mqtt/topics.ts';

describe('mqtt topic filters (subscriptions)', () => {
  it.each(['heatpump/+/telemetry', 'homelab/#', '#', '+', 'a//b', '$share/bridge/heatpump/+/telemetry', '$SYS/broker/uptime'])('accepts %j', (f) => {
    expect(topicFilterProblem(f)).toBeNull();
  });

  it.each([
    ['', /empty/],
    ['heatpump/#/x', /"#" must be a whole level and the last/],
    ['heatpump/x#', /"#" must be a whole level/],
    ['heatpump/dev+/x', /"\+" must be a whole level/],
    ['$share/bridge', /\$share\/<group>\/<filter>/],
    ['$share//x', /\$share\/<group>\/<filter>/],
    ['$share/g+/x', /group name/],
    ['$share/g/', /must not be empty/],
    ['a\u0000b', /NUL/],
  ])('refuses %j', (f, message) => {
    expect(topicFilterProblem(f)).toMatch(message);
  });

  it('splits a shared subscription into group and filter', () => {
    expect(parseShared('$share/bridge/heatpump/+/telemetry')).toEqual({ group: 'bridge', filter: 'heatpump/+/telemetry' });
    expect(parseShared('heatpump/+/telemetry')).toBeNull();
  });
});

describe('mqtt topic matching', () => {
  it.each([
    ['heatpump/+/telemetry', 'heatpump/device-001/telemetry', true],
    ['heatpump/+/telemetry', 'heatpump/device-001/settings', false],
    ['heatpump/+/telemetry', 'heatpump/telemetry', false],
    ['heatpump/#', 'heatpump', true],
    ['heatpump/#', 'heatpump/a/b/c', true],
    ['#', 'anything/at/all', true],
    ['#', '$SYS/broker/uptime', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/broker/uptime', true],
    ['$share/bridge/heatpump/+/telemetry', 'heatpump/d/telemetry', true],
    ['a/+', 'a/', true],
    ['a/b', 'a/b/', false],
  ])('%j matches %j: %s', (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });
});

describe('mqtt topic names (publishing)', () => {
  it('accepts an ordinary topic', () => {
    expect(topicNameProblem('heatpump/device-001/command')).toBeNull();
  });

  it.each([
    ['', /empty/],
    ['heatpump/+/command', /wildcards/],
    ['heatpump/#', /wildcards/],
    ['$SYS/x', /reserved/],
    ['a\u0000', /NUL/],
    ['x'.repeat(65_536), /65535 bytes/],
  ])('refuses %j', (t, message) => {
    expect(topicNameProblem(t)).toMatch(message);
  });
});
