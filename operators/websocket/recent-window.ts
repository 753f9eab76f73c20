/**
 * The recent window of the websocket_server output: the messages of the last `window`, oldest
 * first, as compact as they can be. Each message's value is kept once, as its JSON bytes, packed
 * into large Buffers ("slabs", outside the JS heap); what else a message needs (time, topic,
 * device, where its bytes are) sits in typed arrays used as a ring. So a message costs its JSON
 * plus ~32 bytes, the garbage collector has nothing per message to walk, and a slab is released
 * whole once every message in it has left the window.
 */

/** Strings shared by many entries (topics, devices), each held once, with a count of the entries using it. */
class Interner {
  private readonly ids = new Map<string, number>();
  readonly names: (string | undefined)[] = [];
  private readonly refs: number[] = [];
  private readonly free: number[] = [];

  add(name: string): number {
    let id = this.ids.get(name);
    if (id === undefined) {
      id = this.free.pop() ?? this.names.length;
      this.ids.set(name, id);
      this.names[id] = name;
      this.refs[id] = 0;
    }
    this.refs[id]!++;
    return id;
  }

  release(id: number): void {
    if (--this.refs[id]! > 0) return;
    this.ids.delete(this.names[id]!);
    this.names[id] = undefined;
    this.free.push(id);
  }

  find(name: string): number | undefined {
    return this.ids.get(name);
  }
}

/** What one entry is counted as against `maxBytes` beyond its JSON (its slots in the ring, roughly). */
export const RECENT_ENTRY_OVERHEAD = 32;
const NO_DEVICE = -1;

export interface RecentLimits {
  windowMs: number;
  maxMessages: number;
  maxBytes: number;
}

/** Messages picked for an answer, copied out of the ring (the ring moves on while the answer is sent). */
export interface RecentPick {
  count: number;
  times: Float64Array;
  topics: string[];
  devices: (string | undefined)[];
  /** Each message's JSON bytes (views into the slabs, which stay alive as long as this does). */
  data: Buffer[];
}

export class RecentWindow {
  private cap = 0;
  private head = 0;
  private n = 0;
  private time = new Float64Array(0);
  private topicId = new Int32Array(0);
  private deviceId = new Int32Array(0);
  private offset = new Uint32Array(0);
  private length = new Uint32Array(0);
  private slabOf = new Float64Array(0);
  private readonly topics = new Interner();
  private readonly devices = new Interner();
  /** Live slabs, oldest first; `slabSeq[i]` numbers `slabs[i]`. */
  private slabs: Buffer[] = [];
  private slabSeq: number[] = [];
  private nextSeq = 0;
  /** Bytes used in the last slab (slabSize: full, the next message starts a new one). */
  private used: number;
  private readonly slabSize: number;
  /** Bytes counted against maxBytes (JSON + device + RECENT_ENTRY_OVERHEAD per message). */
  bytes = 0;

  constructor(private readonly limits: RecentLimits) {
    // Large enough to make a slab's own cost nothing, small enough that the oldest, partly
    // expired slab is a small part of maxBytes.
    this.slabSize = Math.min(1 << 20, Math.max(16 << 10, Math.floor(limits.maxBytes / 32)));
    this.used = this.slabSize;
  }

  get size(): number {
    return this.n;
  }

  /** Bytes of the slabs held (what the window really takes, besides ~32 bytes a message in the ring). */
  get slabBytes(): number {
    let total = 0;
    for (const s of this.slabs) total += s.length;
    return total;
  }

  /**
   * Adds a message (`data`: its value as JSON, bytes or text) at `time` (ms), then drops what is
   * older than the window or beyond the caps. Returns how many were dropped for the caps while
   * still inside the window (evicted).
   */
  push(topic: string, device: string | undefined, time: number, data: Buffer | string, now: number): number {
    const len = typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : data.length;
    let evicted = 0;
    if (this.n >= this.limits.maxMessages) evicted += this.dropOldest(now);
    if (this.n === this.cap) this.grow();
    // Where the bytes go: the current slab, a new one, or one of their own when larger than a slab.
    let at = 0;
    if (len > this.slabSize) {
      this.addSlab(Buffer.allocUnsafeSlow(len));
      this.used = this.slabSize;
    } else {
      if (this.used + len > this.slabSize) {
        this.addSlab(Buffer.allocUnsafeSlow(this.slabSize));
        this.used = 0;
      }
      at = this.used;
      this.used += len;
    }
    const slab = this.slabs[this.slabs.length - 1]!;
    const seq = this.slabSeq[this.slabSeq.length - 1]!;
    if (typeof data === 'string') slab.write(data, at, len, 'utf8');
    else data.copy(slab, at);
    const i = (this.head + this.n) % this.cap;
    this.time[i] = time;
    this.topicId[i] = this.topics.add(topic);
    this.deviceId[i] = device === undefined ? NO_DEVICE : this.devices.add(device);
    this.offset[i] = at;
    this.length[i] = len;
    this.slabOf[i] = seq;
    this.n++;
    this.bytes += len + (device?.length ?? 0) + RECENT_ENTRY_OVERHEAD;
    return evicted + this.trim(now);
  }

  /** Drops what is older than the window or beyond the caps; returns how many were evicted for the caps. */
  trim(now: number): number {
    let evicted = 0;
    const oldest = now - this.limits.windowMs;
    while (this.n > 0) {
      const capped = this.n > this.limits.maxMessages || this.bytes > this.limits.maxBytes;
      if (!capped && this.time[this.head]! >= oldest) break;
      evicted += this.dropOldest(now);
    }
    this.releaseSlabs();
    return evicted;
  }

  /** The messages of the window (of `topic` and `device`, when given), oldest first. */
  pick(topic?: string, device?: string): RecentPick {
    const wantTopic = topic === undefined ? undefined : this.topics.find(topic);
    const wantDevice = device === undefined ? undefined : this.devices.find(device);
    const empty: RecentPick = { count: 0, times: new Float64Array(0), topics: [], devices: [], data: [] };
    if ((topic !== undefined && wantTopic === undefined) || (device !== undefined && wantDevice === undefined)) return empty;
    const idx: number[] = [];
    for (let k = 0; k < this.n; k++) {
      const i = (this.head + k) % this.cap;
      if (wantTopic !== undefined && this.topicId[i] !== wantTopic) continue;
      if (wantDevice !== undefined && this.deviceId[i] !== wantDevice) continue;
      idx.push(i);
    }
    const bySeq = new Map<number, Buffer>();
    for (let s = 0; s < this.slabs.length; s++) bySeq.set(this.slabSeq[s]!, this.slabs[s]!);
    const out: RecentPick = { count: idx.length, times: new Float64Array(idx.length), topics: new Array(idx.length), devices: new Array(idx.length), data: new Array(idx.length) };
    idx.forEach((i, k) => {
      out.times[k] = this.time[i]!;
      out.topics[k] = this.topics.names[this.topicId[i]!]!;
      out.devices[k] = this.deviceId[i] === NO_DEVICE ? undefined : this.devices.names[this.deviceId[i]!];
      const at = this.offset[i]!;
      out.data[k] = bySeq.get(this.slabOf[i]!)!.subarray(at, at + this.length[i]!);
    });
    return out;
  }

  private dropOldest(now: number): number {
    const i = this.head;
    const inWindow = this.time[i]! >= now - this.limits.windowMs;
    const d = this.deviceId[i]!;
    this.bytes -= this.length[i]! + (d === NO_DEVICE ? 0 : this.devices.names[d]!.length) + RECENT_ENTRY_OVERHEAD;
    this.topics.release(this.topicId[i]!);
    if (d !== NO_DEVICE) this.devices.release(d);
    this.head = (this.head + 1) % this.cap;
    this.n--;
    if (this.n === 0) this.bytes = 0;
    return inWindow ? 1 : 0;
  }

  /** Slabs before the one of the oldest entry hold nothing any more. */
  private releaseSlabs(): void {
    const keepFrom = this.n ? this.slabOf[this.head]! : Infinity;
    let k = 0;
    while (k < this.slabs.length && this.slabSeq[k]! < keepFrom) k++;
    if (!k) return;
    this.slabs = this.slabs.slice(k);
    this.slabSeq = this.slabSeq.slice(k);
    if (!this.slabs.length) this.used = this.slabSize;
  }

  private addSlab(slab: Buffer): void {
    this.slabs.push(slab);
    this.slabSeq.push(this.nextSeq++);
  }

  private grow(): void {
    const cap = Math.max(1024, Math.min(this.cap * 2, this.limits.maxMessages + 1));
    const move = <T extends Float64Array | Int32Array | Uint32Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      for (let k = 0; k < this.n; k++) b[k] = a[(this.head + k) % this.cap]!;
      return b;
    };
    this.time = move(this.time, (n) => new Float64Array(n));
    this.topicId = move(this.topicId, (n) => new Int32Array(n));
    this.deviceId = move(this.deviceId, (n) => new Int32Array(n));
    this.offset = move(this.offset, (n) => new Uint32Array(n));
    this.length = move(this.length, (n) => new Uint32Array(n));
    this.slabOf = move(this.slabOf, (n) => new Float64Array(n));
    this.head = 0;
    this.cap = cap;
  }
}
