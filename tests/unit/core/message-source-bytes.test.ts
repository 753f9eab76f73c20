import { describe, expect, it } from 'vitest';
import { createMsg, msgBytes, withValue } from '../../../core/message.ts';

describe('msgBytes', () => {
  it('writes the bytes a value was parsed from while the value is unchanged, and serialises a replaced value', () => {
    const bytes = Buffer.from('{"device_id":"device-001", "d5": 35.0}');
    const msg = createMsg(JSON.parse(bytes.toString()));
    msg.source = { value: msg.value, bytes };
    expect(msgBytes(msg)).toBe(bytes);
    // Steps that keep the value (new key, meta, headers) keep the bytes.
    expect(msgBytes(withValue(msg, msg.value, { key: 'device-001' }))).toBe(bytes);
    // A step that replaces the value: the new value is written.
    const changed = withValue(msg, { ...(msg.value as object), source: 'x' });
    expect(msgBytes(changed).toString()).toBe('{"device_id":"device-001","d5":35,"source":"x"}');
    // No source: serialised as before.
    expect(msgBytes(createMsg({ a: 1 })).toString()).toBe('{"a":1}');
  });
});
