/**
 * /proc sampling shared by the benchmarks: CPU time and memory of a process, the machine's busy
 * time and load, and a Sampler that records them at an interval. Linux only (reads /proc).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';

/** Clock ticks per second of /proc/<pid>/stat and /proc/stat (USER_HZ, 100 on Linux). */
export const CLK_TCK = 100;

/** utime + stime of a process, in clock ticks; null if it is gone. */
export function cpuTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

/** utime + stime of a process in seconds; null if it is gone. */
export function cpuSeconds(pid: number): number | null {
  const t = cpuTicks(pid);
  return t === null ? null : t / CLK_TCK;
}

/** VmRSS and VmHWM (peak RSS) of a process in kB; null if it is gone. */
export function memory(pid: number): { rssKb: number; hwmKb: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** VmRSS of a process in MB (MiB); null if it is gone. */
export function rssMb(pid: number): number | null {
  const m = memory(pid);
  return m && Number.isFinite(m.rssKb) ? m.rssKb / 1024 : null;
}

/** Machine-wide CPU ticks: total and busy (everything but idle and iowait). */
export function machineTicks(): { total: number; busy: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
  const idle = v[3]! + v[4]!;
  return { total, busy: total - idle };
}

/** Share of the machine busy between two machineTicks() readings (0..1). */
export const busyBetween = (a: { total: number; busy: number }, b: { total: number; busy: number }): number => (b.busy - a.busy) / Math.max(1, b.total - a.total);

/** 1, 5 and 15 minute load averages. */
export const loadavg = (): number[] => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

/** The `uptime` line (load averages), for reports. */
export function uptime(): string {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return `load average: ${loadavg().map((x) => x.toFixed(2)).join(', ')}`;
  }
}

/** The machine, as the benchmark reports give it. */
export function machineInfo(): { nproc: number; cpu: string | undefined; mem_gib: number; node: string } {
  return { nproc: cpus().length, cpu: cpus()[0]?.model, mem_gib: +(totalmem() / 2 ** 30).toFixed(1), node: process.version };
}

/** A pid from a pid file; null if there is none. */
export function readPid(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

export interface Sample {
  t: number;
  rssKb: number | null;
  /** CPU ticks per watched process (by name). */
  ticks: Record<string, number | null>;
  machine: { total: number; busy: number };
  load1: number;
}

/** Samples RSS of `rssPid` and CPU of every watched process every `everyMs`. */
export class Sampler {
  readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly rssPid: number,
    private readonly watch: () => Record<string, number | null>,
    private readonly everyMs = 250,
  ) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.sample();
  }

  private sample(): void {
    const ticks: Record<string, number | null> = {};
    for (const [name, pid] of Object.entries(this.watch())) ticks[name] = pid ? cpuTicks(pid) : null;
    this.samples.push({ t: Date.now(), rssKb: memory(this.rssPid)?.rssKb ?? null, ticks, machine: machineTicks(), load1: loadavg()[0]! });
  }

  /** Average CPU (% of one core) of each watched process and of the whole machine between t0 and t1. */
  cpuBetween(t0: number, t1: number): { processes: Record<string, number | null>; othersPct: number; machineBusyPct: number; machineCores: number; load1: { min: number; max: number } } | null {
    const inWin = this.samples.filter((s) => s.t >= t0 && s.t <= t1);
    if (inWin.length < 2) return null;
    const a = inWin[0]!;
    const b = inWin[inWin.length - 1]!;
    const secs = (b.t - a.t) / 1000;
    const processes: Record<string, number | null> = {};
    for (const name of Object.keys(b.ticks)) {
      const x = a.ticks[name];
      const y = b.ticks[name];
      processes[name] = x == null || y == null ? null : ((y - x) / CLK_TCK / secs) * 100;
    }
    const cores = (b.machine.total - a.machine.total) / CLK_TCK / secs;
    const busyPct = ((b.machine.busy - a.machine.busy) / CLK_TCK / secs) * 100;
    const loads = inWin.map((s) => s.load1);
    // Everything else on the machine (other sessions' tests, the other stack, ...).
    const ours = Object.values(processes).reduce<number>((a, b) => a + (b ?? 0), 0);
    return { processes, othersPct: Math.max(0, busyPct - ours), machineBusyPct: busyPct, machineCores: Math.round(cores), load1: { min: Math.min(...loads), max: Math.max(...loads) } };
  }

  peakRssKb(t0 = 0, t1 = Infinity): number | null {
    const v = this.samples.filter((s) => s.t >= t0 && s.t <= t1 && s.rssKb != null).map((s) => s.rssKb!);
    return v.length ? Math.max(...v) : null;
  }
}
