import { describe, expect, it } from 'vitest';
import { loadSettings } from './settings.js';

describe('sidecar settings', () => {
  it('reads a fan-out bound as inFlight[/perSecond[/burst]]', () => {
    const s = loadSettings({
      NOX_FANOUT_GITHUB: '4/2',
      NOX_FANOUT_SESSIONS: ' 64 ',
      NOX_FANOUT_TOKENREVIEW: '8/5/20',
    });
    expect(s.fanoutGithub).toEqual({ maxInFlight: 4, ratePerSec: 2 });
    expect(s.fanoutSessions).toEqual({ maxInFlight: 64 });
    expect(s.fanoutTokenReview).toEqual({ maxInFlight: 8, ratePerSec: 5, burst: 20 });
    expect(loadSettings({}).fanoutIntrospection).toEqual({ maxInFlight: 32, ratePerSec: 100, burst: 200 });
  });

  it('refuses a bound that is zero, negative, too large or not three numbers at most', () => {
    for (const bad of ['0', '1/0', '1/2/0', '-1', 'x', '1/2/3/4', '1.5', '200000', '1//2'])
      expect(() => loadSettings({ NOX_FANOUT_INTROSPECTION: bad }), bad).toThrow(
        /NOX_FANOUT_INTROSPECTION: must be/,
      );
  });
});
