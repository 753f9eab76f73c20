import { describe, expect, it } from 'vitest';
import { matchTopicPattern, parseTopicPattern, topicMetadata } from '../../../../operators/mqtt/topics.ts';

describe('mqtt topic_pattern', () => {
  it('turns each {name} level into mqtt_topic_<name> and keeps every level in mqtt_topic_segments', () => {
    const p = parseTopicPattern('heatpump/{device_id}/telemetry');
    expect(p.names).toEqual(['device_id']);
    expect(topicMetadata('heatpump/device-001/telemetry', p)).toEqual({
      meta: { mqtt_topic_segments: ['heatpump', 'device-001', 'telemetry'], mqtt_topic_device_id: 'device-001' },
    });
  });

  it('names several levels, skips + levels and lets a final # take any rest, including none', () => {
    const p = parseTopicPattern('{site}/+/{device_id}/#');
    expect(matchTopicPattern(p, 'home/heatpump/hp-1/telemetry/raw')).toEqual({ site: 'home', device_id: 'hp-1' });
    expect(matchTopicPattern(p, 'home/heatpump/hp-1')).toEqual({ site: 'home', device_id: 'hp-1' });
    expect(matchTopicPattern(p, 'home/heatpump')).toBeNull();
  });

  it('does not match a topic with other literal levels, more or fewer levels, or an empty named level', () => {
    const p = parseTopicPattern('heatpump/{device_id}/telemetry');
    expect(matchTopicPattern(p, 'energy/device-001/telemetry')).toBeNull();
    expect(matchTopicPattern(p, 'heatpump/device-001/telemetry/extra')).toBeNull();
    expect(matchTopicPattern(p, 'heatpump/device-001')).toBeNull();
    expect(matchTopicPattern(p, 'heatpump//telemetry')).toBeNull();
  });

  it('says which topic did not match which pattern (the reason a message is dead-lettered with)', () => {
    const p = parseTopicPattern('heatpump/{device_id}/telemetry');
    expect(topicMetadata('heatpump/x/settings', p)).toEqual({ error: 'topic "heatpump/x/settings" does not match topic_pattern "heatpump/{device_id}/telemetry"' });
  });

  it('without a pattern gives only the segments', () => {
    expect(topicMetadata('a/b', null)).toEqual({ meta: { mqtt_topic_segments: ['a', 'b'] } });
    expect(topicMetadata('/a/', null)).toEqual({ meta: { mqtt_topic_segments: ['', 'a', ''] } });
  });

  it.each([
    ['', /empty/],
    ['heatpump/{Device}/x', /lowercase/],
    ['heatpump/{device_id}/{device_id}', /twice/],
    ['heatpump/{segments}', /reserved/],
    ['heatpump/#/x', /last level/],
    ['heatpump/dev{id}/x', /literal text, \{name\}/],
    ['heatpump/a+/x', /literal text/],
  ])('refuses %j', (source, message) => {
    expect(() => parseTopicPattern(source)).toThrow(message);
  });
});
