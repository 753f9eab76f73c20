/**
 * PostgreSQL restarting ends every connection (57P01). A client the runner has checked out of its
 * pool then emits 'error'; pg-pool listens only while a client is idle, and an 'error' event nobody
 * listens to ends the Node.js process (the soak found the outbox relay, the settings API and the
 * command loop exiting that way). The pools of createPool keep that event handled: the query fails
 * with the error, and the process goes on.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../../../operators/postgres/pool.ts';
import { ADMIN_URL } from '../../helpers/postgres.ts';

const admin = new pg.Client({ connectionString: ADMIN_URL });
afterAll(async () => {
  await admin.end().catch(() => undefined);
});

describe('createPool', () => {
  it('a checked-out client whose backend is terminated fails its query without an unhandled error event', async () => {
    await admin.connect();
    const idleErrors: Error[] = [];
    const pool = createPool(ADMIN_URL, 2, (err) => idleErrors.push(err));
    const client = await pool.connect();
    const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    // What a PostgreSQL restart does to each connection (SQLSTATE 57P01).
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await ended;
    await expect(client.query('SELECT 1')).rejects.toThrow();
    client.release(true);
    // The pool still works: a new connection answers.
    expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    expect(client.listenerCount('error')).toBeGreaterThan(0);
    await pool.end();
  });
});
