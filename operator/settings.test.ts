import { describe, expect, it } from 'vitest';
import { parseNamespaces } from '../common/kube/config.js';
import { definitions, describeSettings, loadSettings } from './settings.js';

describe('operator settings', () => {
  it('has a default and a doc for every setting, and defaults that pass their own rules', () => {
    const s = loadSettings({});
    expect(s.leaseDurationMs).toBe(15_000);
    expect(s.leaderElection).toBe(true);
    for (const d of Object.values(definitions)) {
      expect(d.env).toMatch(/^NOX_[A-Z_]+$/);
      expect(d.doc.length).toBeGreaterThan(10);
    }
    expect(describeSettings()).toContain('NOX_LEASE_RENEW_DEADLINE_MS');
  });

  it('names the variable and the rule a bad value breaks', () => {
    expect(() => loadSettings({ NOX_HTTP_PORT: 'x', NOX_LEADER_ELECTION: 'yes' })).toThrow(
      /NOX_HTTP_PORT: must be a port.*\n.*NOX_LEADER_ELECTION: must be true or false/s,
    );
  });

  it('refuses lease timings that could give two leaders', () => {
    expect(() =>
      loadSettings({ NOX_LEASE_DURATION_MS: '5000', NOX_LEASE_RENEW_DEADLINE_MS: '5000' }),
    ).toThrow(/below NOX_LEASE_DURATION_MS/);
    expect(() =>
      loadSettings({ NOX_LEASE_RENEW_DEADLINE_MS: '2000', NOX_LEASE_RETRY_PERIOD_MS: '2000' }),
    ).toThrow(/NOX_LEASE_RETRY_PERIOD_MS/);
    expect(loadSettings({ NOX_LEADER_ELECTION: 'false', NOX_LEASE_DURATION_MS: '1000' }).leaderElection).toBe(
      false,
    );
  });

  it('parses namespace lists', () => {
    expect(parseNamespaces(' a, b ,,c')).toEqual(['a', 'b', 'c']);
    expect(parseNamespaces('')).toEqual([]);
  });
});
