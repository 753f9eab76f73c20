import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tlsOptions } from '../../../../operators/kafka/client.ts';

describe('kafka tls', () => {
  it('passes booleans through and reads CA, certificate and key files', () => {
    expect(tlsOptions(false)).toBe(false);
    expect(tlsOptions(true)).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'tls-'));
    for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(join(dir, f), `-----${f}-----`);
    expect(tlsOptions({ root_cas_file: join(dir, 'ca.pem'), cert_file: join(dir, 'cert.pem'), key_file: join(dir, 'key.pem'), server_name: 'kafka.internal' })).toEqual({
      ca: [Buffer.from('-----ca.pem-----')],
      cert: Buffer.from('-----cert.pem-----'),
      key: Buffer.from('-----key.pem-----'),
      servername: 'kafka.internal',
      rejectUnauthorized: true,
    });
    expect(tlsOptions({ skip_cert_verify: true })).toEqual({ rejectUnauthorized: false });
  });

  it('names a file it cannot read, and a certificate without its key', () => {
    expect(() => tlsOptions({ root_cas_file: '/nonexistent/ca.pem' })).toThrow(/tls\.root_cas_file: cannot read \/nonexistent\/ca\.pem/);
    expect(() => tlsOptions({ cert_file: 'c.pem' })).toThrow(/cert_file and key_file go together/);
  });
});
