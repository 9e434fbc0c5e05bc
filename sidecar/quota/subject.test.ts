import { describe, expect, it } from 'vitest';
import { sourceIpPart } from './subject.js';

describe('sourceIpPart', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['::FFFF:c000:0207', '192.0.2.7'],
    ['0:0:0:0:0:ffff:192.0.2.7', '192.0.2.7'],
    ['::192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2::1', '2001:db8:1:2::/64'],
    ['2001:0DB8:0001:0002:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
    ['2001:db8::', '2001:db8:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['1::2:3:4:5:6:7', '1:0:2:3::/64'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4::/64'],
  ])('%s counts as %s', (address, part) => {
    expect(sourceIpPart(address)).toBe(part);
  });

  it.each(['', 'not-an-address', '1.2.3', '1:2:3', '256.1.1.1', '/var/run/envoy.sock', '::ffff:1.2.3.4.5'])(
    '"%s" is no address: the part is missing',
    (address) => {
      expect(sourceIpPart(address)).toBeUndefined();
    },
  );
});
