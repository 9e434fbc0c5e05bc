/**
 * The risk model's view of one subject's recent behaviour, kept next to its quota counters and
 * observed by the same store call (sidecar/quota/gcra.lua; the memory store for standalone
 * mode): a check with quota and risk is one Redis round trip.
 */
export interface SubjectObservation {
  /** The subject's hash tag, as in its quota keys: the same Redis Cluster slot. */
  readonly tag: string;
  /** The request's source address; empty when unknown (not counted). */
  readonly sourceIp: string;
  /** The User-Agent header; empty when absent (not counted as new). */
  readonly userAgent: string;
  /** The method and the path's first two segments ("GET /api/items"): what "a route" is. */
  readonly route: string;
}

export interface SubjectFeatures {
  /** Requests in the last 60 s, this one included (sliding estimate over two clock minutes). */
  readonly perMinute: number;
  /** Requests in the last hour, this one included (sliding estimate over two clock hours). */
  readonly perHour: number;
  /** Distinct source addresses in this clock hour and the last (HyperLogLog: ±0.81 %). */
  readonly distinctIps: number;
  /**
   * 1: a user agent this subject was not seen with, else 0. Its agents are remembered (the
   * first 64) until it is idle for 30 days.
   */
  readonly newUserAgent: 0 | 1;
  /** 1: a route this subject did not use, else 0 (the first 1 000, as agents). */
  readonly newRoute: 0 | 1;
  /**
   * The subject's refused checks (bad credentials, access denied, failed logins) in the last
   * 15 minutes (sliding over two clock quarters), as the sidecars recorded them (failures.ts).
   */
  readonly failures: number;
}

/** The keys of a subject's risk state, in the order the script takes them. */
export function observationKeys(tag: string): string[] {
  const p = `nox:r:{${tag}}:`;
  return [`${p}rate`, `${p}ipa`, `${p}ipb`, `${p}agents`, `${p}routes`];
}

/** The script's arguments for an observation (agents and routes stored hashed). */
export function observationArgs(o: SubjectObservation): string[] {
  return [o.sourceIp, o.userAgent ? fnv1a(o.userAgent) : '', o.route ? fnv1a(o.route) : ''];
}

/** The six values the script appends to its reply, from `at`. */
export function parseFeatures(reply: readonly unknown[], at: number): SubjectFeatures {
  const n = (i: number) => Number(reply[at + i]);
  return {
    perMinute: n(0),
    perHour: n(1),
    distinctIps: n(2),
    newUserAgent: n(3) === 1 ? 1 : 0,
    newRoute: n(4) === 1 ? 1 : 0,
    failures: n(5),
  };
}

/** "GET /a/b" for GET /a/b/c?d: the method and the first two segments of the path. */
export function routeOf(method: string, path: string): string {
  const q = path.indexOf('?');
  const p = q === -1 ? path : path.slice(0, q);
  let end = p.indexOf('/', 1);
  if (end !== -1) end = p.indexOf('/', end + 1);
  return `${method} ${end === -1 ? p : p.slice(0, end)}`;
}

/**
 * FNV-1a, 32 bits, base 36: a short stable name for a user agent or a route. Not a secret and
 * not an index of anything else: a collision only makes one new thing look known.
 */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(36);
}

interface MemoryState {
  minute: number;
  perMinute: [current: number, previous: number];
  hour: number;
  perHour: [current: number, previous: number];
  /** Source addresses of this clock hour and the last. */
  ips: Set<string>;
  previousIps: Set<string>;
  agents: Set<string>;
  routes: Set<string>;
  quarter: number;
  failures: [current: number, previous: number];
  lastSeen: number;
}

const DAY30 = 30 * 86_400_000;
/** Bounds per subject, as the script's: sets of agents and routes; addresses counted exactly up to this. */
const AGENTS = 64;
const ROUTES = 1000;
const IPS = 10_000;

/**
 * The same observation in process, for standalone mode: the same windows and bounds as the
 * script (addresses counted exactly, up to a bound, where Redis estimates), the subjects kept
 * in least-recently-used order up to `maxSubjects`, and forgotten after 30 idle days.
 */
export class MemorySubjectStates {
  readonly #states = new Map<string, MemoryState>();

  constructor(private readonly maxSubjects: number) {}

  get size(): number {
    return this.#states.size;
  }

  observe(o: SubjectObservation, now: number): SubjectFeatures {
    const s = this.#state(o.tag, now);
    const minute = Math.floor(now / 60_000);
    const hour = Math.floor(now / 3_600_000);
    s.perMinute = rolled(s.minute, s.perMinute, minute);
    s.perHour = rolled(s.hour, s.perHour, hour);
    if (s.hour !== hour) {
      s.previousIps = s.hour === hour - 1 ? s.ips : new Set();
      s.ips = new Set();
    }
    s.minute = minute;
    s.hour = hour;
    s.perMinute[0]++;
    s.perHour[0]++;
    if (o.sourceIp && s.ips.size < IPS) s.ips.add(o.sourceIp);
    s.lastSeen = now;
    let ips = s.ips.size;
    for (const ip of s.previousIps) if (!s.ips.has(ip)) ips++;
    const features: SubjectFeatures = {
      perMinute: Math.floor(s.perMinute[1] * (1 - (now % 60_000) / 60_000) + s.perMinute[0]),
      perHour: Math.floor(s.perHour[1] * (1 - (now % 3_600_000) / 3_600_000) + s.perHour[0]),
      distinctIps: ips,
      newUserAgent: novel(s.agents, o.userAgent, AGENTS),
      newRoute: novel(s.routes, o.route, ROUTES),
      failures: this.#failures(s, now),
    };
    this.#bound();
    return features;
  }

  /** As failures.lua: `count` refused checks of the subject `tag`. */
  fail(tag: string, count: number, now: number): void {
    const s = this.#state(tag, now);
    this.#failures(s, now);
    s.failures[0] += count;
    this.#bound();
  }

  clear(): void {
    this.#states.clear();
  }

  #failures(s: MemoryState, now: number): number {
    const quarter = Math.floor(now / 900_000);
    s.failures = rolled(s.quarter, s.failures, quarter);
    s.quarter = quarter;
    return Math.floor(s.failures[1] * (1 - (now % 900_000) / 900_000) + s.failures[0]);
  }

  /** The subject's state, made young (LRU); a new one for a subject idle 30 days. */
  #state(tag: string, now: number): MemoryState {
    let s = this.#states.get(tag);
    if (s) this.#states.delete(tag);
    if (!s || now - s.lastSeen > DAY30) {
      s = {
        minute: 0,
        perMinute: [0, 0],
        hour: 0,
        perHour: [0, 0],
        ips: new Set(),
        previousIps: new Set(),
        agents: new Set(),
        routes: new Set(),
        quarter: 0,
        failures: [0, 0],
        lastSeen: now,
      };
    }
    this.#states.set(tag, s);
    return s;
  }

  #bound(): void {
    for (const tag of this.#states.keys()) {
      if (this.#states.size <= this.maxSubjects) break;
      this.#states.delete(tag);
    }
  }
}

function rolled(at: number, counts: [number, number], now: number): [number, number] {
  if (at === now) return counts;
  if (at === now - 1) return [0, counts[0]];
  return [0, 0];
}

/** As the script's: 1 when not among those seen; remembered up to `bound`. */
function novel(seen: Set<string>, member: string, bound: number): 0 | 1 {
  if (!member || seen.has(member)) return 0;
  if (seen.size < bound) seen.add(member);
  return 1;
}
