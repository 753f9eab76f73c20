/**
 * The dashboard (dashboard/) in a real browser: Debian's Chromium, headless, driven by
 * playwright-core, against the real stack. Runs, each as `runner start` in a child process:
 *
 *   simulator --MQTT--> mqtt-realtime --Kafka--> realtime-fanout --WebSocket--> page
 *   page --HTTP--> history-api (telemetry database)      page --HTTP--> settings-api (settings database)
 *
 * and the settings command loop after the outbox, all the pipelines as shipped in one process:
 *
 *   settings outbox --command-dispatch--MQTT--> simulated heat pump --telemetry--> mqtt-bridge
 *     --Kafka--> command-confirm --> outbox row confirmed      (command-timeouts: timed_out)
 *
 * so the page says "updated" because the simulated heat pump applied the command and its telemetry
 * confirmed it. device-001 answers commands; device-002 ignores them (its command times out).
 *
 * Isolation on the shared stack: MQTT topics under a unique first level (the dispatcher's
 * COMMAND_TOPIC_PREFIX too), Kafka topics of their own (e2e-<id>-heatpump-realtime, ...; the
 * websocket output tags messages with the original names; the bridge's and the confirmer's
 * homelab-* topics renamed), unique MQTT client ids and consumer groups, fresh databases, every
 * port 0 (read from the log lines). The APIs allow the page's origin
 * (DASHBOARD_ORIGINS=http://127.0.0.1:*), as in production where the dashboard is on port 8090.
 *
 * Waits are on page content and network answers (Playwright's waiting APIs), never pauses.
 * Chromium missing is a failure with a message (bash scripts/test installs it), not a skip.
 * DASHBOARD_SCREENSHOT=<file> saves a screenshot of the dashboard there (docs/dashboard.png).
 */
import { existsSync, readFileSync, rmSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';
import type { Browser, Page } from 'playwright-core';
import { parseDocument } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type AppliedEvent, type Fleet } from '../../simulator/fleet.ts';
import { createTopicsReady } from '../helpers/kafka.ts';
import type { TestDatabase } from '../helpers/postgres.ts';
import { type BridgeSetup, MQTT_URL, ROOT, RunnerProcess, bridgePipeline, deleteTopics, kafkaClient, uniqueId, within } from './mqtt-bridge-harness.ts';
import { type IsolatedPipeline, isolatedPipeline, migratedDatabase } from './sink-harness.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const id = uniqueId();
/** The command loop's topics (bridge, confirm) are named after this id, the realtime ones after `id`. */
const loopId = `${id}c`;
/** The MQTT first level of everything in this test: the bridge's (mqtt-bridge-harness). */
const level = `e2e-bridge-${loopId}`;
const topicOf = (name: string) => `e2e-${id}-${name}`;
const DEVICES = ['device-001', 'device-002'];
/** device-001 answers commands, device-002 ignores them. */
const [ANSWERING, IGNORING] = DEVICES as [string, string];
const UI_TIMEOUT = 30_000;
/** Seconds a published command waits for confirming telemetry before the sweep times it out. */
const CONFIRM_TIMEOUT_S = 10;

let dir: string;
let telemetry: TestDatabase;
let settings: TestDatabase;
let bridge: BridgeSetup | null = null;
let confirm: IsolatedPipeline | null = null;
let answering: Fleet | null = null;
let ignoring: Fleet | null = null;
let browser: Browser | null = null;
let watcher: mqtt.MqttClient | null = null;
const runners: RunnerProcess[] = [];
/** Outdoor temperatures (d0) the simulator published, per device, as the page shows them (1 decimal). */
const published = new Map<string, Set<string>>();
let pageUrl: string;

/** pipelines/<name>.yaml with the changes `edit` makes, written to the test's folder. */
function pipelineCopy(name: string, edit: (doc: ReturnType<typeof parseDocument>) => void): string {
  const doc = parseDocument(readFileSync(join(ROOT, `pipelines/${name}.yaml`), 'utf8'));
  edit(doc);
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, doc.toString({ lineWidth: 0 }));
  return file;
}

function expectIn(doc: ReturnType<typeof parseDocument>, path: string[], want: unknown) {
  const have = doc.getIn(path);
  const text = JSON.stringify(have && typeof have === 'object' && 'toJSON' in have ? (have as { toJSON(): unknown }).toJSON() : have);
  if (text !== JSON.stringify(want)) throw new Error(`the pipeline changed: ${path.join('.')} is ${text}, this test expects ${JSON.stringify(want)}; update ${import.meta.url}`);
}

async function start(file: string | string[], name: string, env: Record<string, string>, ready: string): Promise<RunnerProcess> {
  const r = new RunnerProcess(file, name, { DASHBOARD_ORIGINS: 'http://127.0.0.1:*', ...env });
  runners.push(r);
  return within(60_000, () => `${name}: no "${ready}" log line; exited: ${!r.running}`, r.logged((l) => l.msg === ready)).then(() => r);
}

async function portOf(r: RunnerProcess, msg: string): Promise<number> {
  return Number((await r.logged((l) => l.msg === msg)).port);
}

async function openDashboard(): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width: 1200, height: 1000 } });
  page.on('pageerror', (err) => process.stderr.write(`[page] ${err.message}\n`));
  await page.goto(pageUrl);
  return page;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is missing: no ${CHROMIUM}. Install Debian's chromium (bash scripts/test does: apt-get install chromium) or set CHROMIUM_PATH.`);
  }
  const { chromium } = await import('playwright-core').catch((err: unknown) => {
    throw new Error(`playwright-core is not installed (bash scripts/test installs it): ${String(err)}`);
  });
  dir = mkdtempSync(join(tmpdir(), 'runner-e2e-dashboard-'));
  [telemetry, settings] = await Promise.all([migratedDatabase('telemetry'), migratedDatabase('heatpump_settings')]);
  for (const d of DEVICES) await settings.query('INSERT INTO settings (device_id, indoor_target_temp, mode, hot_water_target_temp, heating_curve, heating_curve_offset, eco_mode) VALUES ($1, 20, 1, 50, 0.6, 0, false)', [d]);
  // Six hours of history for the chart: one reading a minute, a daily swing of the outdoor temperature.
  await telemetry.query(
    `INSERT INTO heatpump (time, device_id, outdoor_temp, supply_temp, return_temp, indoor_temp, power_input, heat_output)
     SELECT date_trunc('minute', now()) - i * INTERVAL '1 minute', d, 4 + 3 * sin(i / 60.0), 38 - sin(i / 60.0), 32 - 0.5 * sin(i / 60.0), 21 + 0.3 * cos(i / 45.0), 1200, 4300
       FROM generate_series(0, 359) AS i, unnest($1::text[]) AS d`,
    [DEVICES],
  );

  // The loop's pipelines with their homelab-* topics renamed: the bridge (MQTT filters under
  // `level`) writes the telemetry topic the confirmer reads.
  bridge = bridgePipeline(loopId);
  if (bridge.mqttPrefix !== `${level}/`) throw new Error(`mqtt-bridge-harness names its MQTT level ${bridge.mqttPrefix}, this test expects ${level}/`);
  confirm = isolatedPipeline('command-confirm', loopId);
  const loopTopics = new Map([...bridge.topics, ...confirm.topics].map((t) => [t.topic, t]));
  const admin = kafkaClient(`e2e-dash-${id}`).admin();
  await admin.connect();
  await createTopicsReady(admin, [...['heatpump-realtime', 'energy-realtime', 'dead-letter'].map((t) => ({ topic: topicOf(t), numPartitions: 1 })), ...loopTopics.values()]);
  await admin.disconnect();

  const mqttRealtime = pipelineCopy('mqtt-realtime', (doc) => {
    expectIn(doc, ['input', 'mqtt', 'topics'], ['heatpump/+/telemetry', 'energy/+/telemetry']);
    expectIn(doc, ['output', 'kafka', 'topic'], '${! $meta.mqtt_topic_kind }-realtime');
    doc.setIn(['input', 'mqtt', 'topics'], [`${level}/heatpump/+/telemetry`, `${level}/energy/+/telemetry`]);
    doc.setIn(['input', 'mqtt', 'topic_pattern'], `${level}/${String(doc.getIn(['input', 'mqtt', 'topic_pattern']))}`);
    doc.setIn(['input', 'mqtt', 'client_id'], `${level}-realtime`);
    doc.setIn(['output', 'kafka', 'topic'], `e2e-${id}-\${! $meta.mqtt_topic_kind }-realtime`);
    doc.setIn(['dead_letter', 'kafka', 'topic'], topicOf('dead-letter'));
  });
  const fanout = pipelineCopy('realtime-fanout', (doc) => {
    expectIn(doc, ['input', 'kafka', 'topics'], ['heatpump-realtime', 'energy-realtime']);
    doc.setIn(['input', 'kafka', 'topics'], [topicOf('heatpump-realtime'), topicOf('energy-realtime')]);
    // Clients see the original topic names, as the dashboard expects them.
    doc.setIn(['output', 'websocket_server', 'topic'], `$substringAfter($meta.kafka_topic, "e2e-${id}-")`);
    doc.setIn(['dead_letter', 'kafka', 'topic'], topicOf('dead-letter'));
  });

  const [realtime, history, settingsApi, , loop] = await Promise.all([
    start(fanout, 'realtime-fanout', { REALTIME_PORT: '0', REALTIME_HOST: '127.0.0.1', REALTIME_GROUP: `e2e-dash-${id}` }, 'websocket server listening'),
    start(join(ROOT, 'pipelines/history-api.yaml'), 'history-api', { HISTORY_API_PORT: '0', HISTORY_API_ADDRESS: '127.0.0.1', TELEMETRY_DATABASE_URL: telemetry.url }, 'http_server listening'),
    start(join(ROOT, 'pipelines/settings-api.yaml'), 'settings-api', { SETTINGS_API_PORT: '0', SETTINGS_API_ADDRESS: '127.0.0.1', HEATPUMP_SETTINGS_DATABASE_URL: settings.url }, 'http_server listening'),
    start(mqttRealtime, 'mqtt-realtime', {}, 'mqtt subscribed'),
    // The command loop: dispatch over MQTT, the devices' telemetry into Kafka, confirmation, timeouts.
    start(
      [bridge.file, confirm.file, join(ROOT, 'pipelines/command-dispatch.yaml'), join(ROOT, 'pipelines/command-timeouts.yaml')],
      'command-loop',
      {
        HEATPUMP_SETTINGS_DATABASE_URL: settings.url,
        COMMAND_TOPIC_PREFIX: `${level}/`,
        COMMAND_DISPATCH_CLIENT_ID: `${level}-dispatch`,
        COMMAND_DISPATCH_POLL_INTERVAL: '200ms',
        COMMAND_CONFIRM_GROUP: `e2e-dash-confirm-${id}`,
        COMMAND_CONFIRM_START_FROM: 'earliest',
        COMMAND_CONFIRM_TIMEOUT: String(CONFIRM_TIMEOUT_S),
        COMMAND_SWEEP_INTERVAL: '500ms',
      },
      'mqtt subscribed',
    ),
  ]);
  pageUrl = `http://127.0.0.1:${await portOf(realtime, 'websocket server listening')}/?api=http://127.0.0.1:${await portOf(settingsApi, 'http_server listening')}&history=http://127.0.0.1:${await portOf(history, 'http_server listening')}`;
  await within(30_000, () => 'the APIs\' postgres processors did not get ready', Promise.all([history, settingsApi].map((r) => r.logged((l) => l.msg === 'postgres processor ready'))));
  await within(60_000, () => 'the command loop did not get ready (dispatcher connected to MQTT, outbox source checked, confirmer in its group)', Promise.all([
    loop.logged((l) => l.msg === 'mqtt connected' && l.pipeline === 'command-dispatch'),
    loop.logged((l) => l.msg === 'outbox source ready' && l.pipeline === 'command-dispatch'),
    loop.logged((l) => l.msg === 'joined consumer group' && l.pipeline === 'command-confirm'),
  ]));

  // What the simulator publishes, to compare with what the page shows.
  watcher = await mqtt.connectAsync(MQTT_URL, { clientId: `${level}-watch`, clean: true, reconnectPeriod: 0 });
  watcher.on('message', (topic, payload) => {
    const m = JSON.parse(payload.toString()) as { device_id?: string; d0?: number };
    if (m.device_id && typeof m.d0 === 'number') {
      if (!published.has(m.device_id)) published.set(m.device_id, new Set());
      published.get(m.device_id)!.add(m.d0.toFixed(1));
    }
  });
  await watcher.subscribeAsync(`${level}/heatpump/+/telemetry`, { qos: 1 });
  // The heat pumps start with the settings the database has (20 degC), so a command is confirmed
  // only once the device took it.
  const simulated = { url: MQTT_URL, devices: 1, rate: 4, kinds: ['heatpump', 'energy'] as ('heatpump' | 'energy')[], topic_prefix: `${level}/`, initial_settings: { indoor_target_temp: 20, mode: 1 } };
  answering = await startFleet({ ...simulated, first_index: 1, client_id: `${level}-sim-1` });
  ignoring = await startFleet({ ...simulated, first_index: 2, client_id: `${level}-sim-2`, respond: false });

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

afterAll(async () => {
  await browser?.close();
  await answering?.stop();
  await ignoring?.stop();
  await watcher?.endAsync();
  for (const r of runners) await r.stop();
  const admin = kafkaClient(`e2e-dash-${id}-cleanup`).admin();
  await admin.connect();
  await admin.deleteTopics({ topics: ['heatpump-realtime', 'energy-realtime', 'dead-letter'].map(topicOf) }).catch(() => undefined);
  if (bridge) await deleteTopics(admin, bridge);
  await confirm?.cleanup(admin);
  await admin.disconnect();
  await telemetry?.drop();
  await settings?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('dashboard in Chromium', () => {
  it('shows live values of each simulated heat pump, as published, and the history chart', async () => {
    const page = await openDashboard();
    await page.locator('#connection[data-state="live"]').waitFor({ timeout: UI_TIMEOUT });
    for (const device of DEVICES) {
      const outdoor = page.locator(`#devices tr[data-device="${device}"] td[data-field="outdoor"]`);
      await outdoor.waitFor({ timeout: UI_TIMEOUT });
      const shown = (await outdoor.textContent())!;
      expect(shown).toMatch(/^-?\d+\.\d$/);
      expect([...(published.get(device) ?? [])]).toContain(shown);
      expect(await page.locator(`#devices tr[data-device="${device}"] td[data-field="supply"]`).textContent()).toMatch(/^\d+\.\d$/);
    }
    await page.locator('#energy', { hasText: /House power \d+ W/ }).waitFor({ timeout: UI_TIMEOUT });

    // The chart of the first device: 6 hours in 5-minute buckets from the history API.
    await page.locator('#history-status', { hasText: /\d+ points, 5m buckets \(heatpump\)/ }).waitFor({ timeout: UI_TIMEOUT });
    const points = Number((await page.locator('#history-status').textContent())!.split(' ')[0]);
    expect(points).toBeGreaterThanOrEqual(72);
    expect(await page.locator('#chart polyline.series').count()).toBe(4);

    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: resolve(ROOT, process.env.DASHBOARD_SCREENSHOT), fullPage: true });
    await page.close();
  });

  it('a settings change goes through the real loop: "Sending to heatpump…" while the outbox entry is polled, "updated" once the heat pump\'s telemetry confirmed it; a change it ignores ends timed out', async () => {
    const page = await openDashboard();
    const field = page.locator('#settings-form input[name="indoor_target_temp"]');
    const formShows = (value: string) =>
      page.waitForFunction((v) => (document.querySelector('#settings-form input[name="indoor_target_temp"]') as HTMLInputElement | null)?.value === v, value, { timeout: UI_TIMEOUT });
    const choose = async (device: string) => {
      await page.locator(`#settings-device option[value="${device}"]`).waitFor({ state: 'attached', timeout: UI_TIMEOUT });
      await page.locator('#settings-device').selectOption(device);
      // The form shows the device's settings from the API.
      await formShows('20');
    };

    await choose(ANSWERING);
    const applied = new Promise<AppliedEvent>((resolve) => answering!.once('applied', resolve));
    await field.fill('22.5');
    const patched = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().includes(`/api/v1/heatpump/settings/${ANSWERING}`));
    await page.locator('#save').click();
    const answer = (await (await patched).json()) as { outbox_id: number; indoor_target_temp: number };
    expect(answer.indoor_target_temp).toBe(22.5);
    await page.locator('#command-status[data-state="sending"]', { hasText: 'Sending to heatpump…' }).waitFor({ timeout: UI_TIMEOUT });
    const command = (await settings.query('SELECT payload FROM outbox WHERE id = $1', [answer.outbox_id])).rows[0];
    expect(command.payload).toEqual({ outbox_id: answer.outbox_id, device_id: ANSWERING, settings: { indoor_target_temp: 22.5 } });

    // Nobody but the loop touches the row: dispatched over MQTT, applied by the simulated heat pump,
    // reported in its telemetry, confirmed by command-confirm; the page polls until it sees that.
    await page.locator('#command-status[data-state="updated"]', { hasText: 'Settings updated' }).waitFor({ timeout: UI_TIMEOUT });
    const took = await within(UI_TIMEOUT, () => 'the simulated heat pump did not apply the command', applied);
    expect(took).toMatchObject({ device_id: ANSWERING, outcome: { status: 'applied', outbox_id: answer.outbox_id, values: { indoor_target_temp: 22.5 } } });
    const row = (await settings.query('SELECT status, published_at, confirmed_at, retry_count FROM outbox WHERE id = $1', [answer.outbox_id])).rows[0];
    expect(row).toMatchObject({ status: 'confirmed', retry_count: 0 });
    expect(row.confirmed_at.getTime()).toBeGreaterThanOrEqual(row.published_at.getTime());
    const report = (await settings.query('SELECT settings FROM device_reports WHERE device_id = $1', [ANSWERING])).rows[0];
    expect(report.settings.indoor_target_temp).toBe(22.5);

    // A heat pump that ignores the command: published, no confirming telemetry, timed out by the
    // sweep; the page shows the failure and its reason.
    await choose(IGNORING);
    await field.fill('21');
    const second = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().includes(`/api/v1/heatpump/settings/${IGNORING}`));
    await page.locator('#save').click();
    const ignored = (await (await second).json()) as { outbox_id: number };
    await page.locator('#command-status[data-state="sending"]').waitFor({ timeout: UI_TIMEOUT });
    await page
      .locator('#command-status[data-state="failed"]', { hasText: `Failed: timed_out: no telemetry reported the commanded values within ${CONFIRM_TIMEOUT_S} s of publishing` })
      .waitFor({ timeout: UI_TIMEOUT + CONFIRM_TIMEOUT_S * 1000 });
    expect((await settings.query('SELECT status, published_at FROM outbox WHERE id = $1', [ignored.outbox_id])).rows[0]).toMatchObject({ status: 'timed_out', published_at: expect.any(Date) });
    expect(ignoring!.stats().commands.ignored).toBeGreaterThanOrEqual(1);
    await page.close();
  }, 120_000);

  it('a value outside the API\'s rules is refused in the page (no request), and the API\'s own error is shown when it rejects one', async () => {
    const page = await openDashboard();
    const patches: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'PATCH') patches.push(r.url());
    });
    await page.waitForFunction(() => (document.querySelector('#settings-form input[name="indoor_target_temp"]') as HTMLInputElement | null)?.value !== '', null, { timeout: UI_TIMEOUT });
    // The rules come from the API's OpenAPI document; wait until the page has read it.
    await page.locator('#settings-form[data-rules="api"]').waitFor({ timeout: UI_TIMEOUT });
    await page.locator('#settings-form input[name="indoor_target_temp"]').fill('15.3');
    await page.locator('#settings-form input[name="hot_water_target_temp"]').fill('80');
    await page.locator('#save').click();
    await page.locator('#command-status[data-state="invalid"]').waitFor({ timeout: UI_TIMEOUT });
    expect(await page.locator('#errors li').allTextContents()).toEqual(['indoor_target_temp must be a multiple of 0.5', 'hot_water_target_temp must be at most 65']);
    expect(patches).toEqual([]);
    await page.close();

    // Without the OpenAPI document the page cannot check; the API rejects the value and the page
    // shows the API's problems.
    const blind = await browser!.newPage();
    await blind.route('**/api/v1/openapi.json', (route) => route.abort());
    await blind.goto(pageUrl);
    await blind.locator('#settings-form[data-rules="none"]').waitFor({ timeout: UI_TIMEOUT });
    await blind.waitForFunction(() => (document.querySelector('#settings-form input[name="indoor_target_temp"]') as HTMLInputElement | null)?.value !== '', null, { timeout: UI_TIMEOUT });
    await blind.locator('#settings-form input[name="indoor_target_temp"]').fill('15.3');
    const rejected = blind.waitForResponse((r) => r.request().method() === 'PATCH');
    await blind.locator('#save').click();
    expect((await rejected).status()).toBe(400);
    await blind.locator('#command-status[data-state="failed"]', { hasText: 'Rejected by the API (400).' }).waitFor({ timeout: UI_TIMEOUT });
    expect(await blind.locator('#errors li').allTextContents()).toEqual(['/indoor_target_temp must be multiple of 0.5']);
    await blind.close();
  });
});
