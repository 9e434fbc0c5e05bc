import type { RiskFeature } from '../../common/resources/kinds/riskModel.js';
import type { SubjectFeatures } from './subjectFeatures.js';

/** What one feature is computed from: the subject's observed behaviour, and the request itself. */
export interface FeatureSource {
  readonly subject: SubjectFeatures;
  readonly method: string;
  readonly anonymous: boolean;
  /** ms since the epoch. */
  readonly now: number;
}

/**
 * Every feature a RiskModel may list, defined once: its unit and window, and how it is
 * computed (the subject's are observed by the quota store's call, subjectFeatures.ts). The
 * trainer reads the same names from the audit log, so a name here means one thing everywhere.
 */
export const featureDefinitions: Record<
  RiskFeature,
  { readonly unit: string; readonly value: (s: FeatureSource) => number }
> = {
  subjectRate1m: { unit: 'requests in the last 60 s', value: (s) => s.subject.perMinute },
  subjectRate1h: { unit: 'requests in the last hour', value: (s) => s.subject.perHour },
  distinctSourceIPs1h: {
    unit: 'source addresses in this clock hour and the last',
    value: (s) => s.subject.distinctIps,
  },
  recentFailures15m: {
    unit: 'refused checks (bad credentials, access denied, failed logins) in the last 15 min',
    value: (s) => s.subject.failures,
  },
  hourOfDay: { unit: 'hour, UTC (0-23, with the minutes as a fraction)', value: (s) => hourOfDay(s.now) },
  dayOfWeek: { unit: 'day, UTC (0 Sunday - 6)', value: (s) => new Date(s.now).getUTCDay() },
  newUserAgent: {
    unit: '1 if the subject was not seen with this user agent',
    value: (s) => s.subject.newUserAgent,
  },
  pathNovelty: { unit: '1 if the subject did not use this route', value: (s) => s.subject.newRoute },
  writeMethod: { unit: '1 for POST, PUT, PATCH, DELETE', value: (s) => (WRITES.has(s.method) ? 1 : 0) },
  anonymous: { unit: '1 when no identity was established', value: (s) => (s.anonymous ? 1 : 0) },
};

const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function hourOfDay(now: number): number {
  return (now % 86_400_000) / 3_600_000;
}

/** The model's input row, in the RiskModel's order. */
export function featureRow(names: readonly RiskFeature[], source: FeatureSource): Float32Array {
  const row = new Float32Array(names.length);
  for (let i = 0; i < names.length; i++) row[i] = featureDefinitions[names[i]!].value(source);
  return row;
}

/** The row as the audit log records it (name → value), for training and explanations. */
export function featureRecord(names: readonly RiskFeature[], row: Float32Array): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < names.length; i++) out[names[i]!] = Math.round(row[i]! * 1000) / 1000;
  return out;
}
