// `helm test`: one real ext_authz Check through the Service, as Envoy sends it (gRPC over
// HTTP/2 cleartext), with nothing but Node's own modules, so it runs in the nox image whatever
// its layout. The request is for a host nobody declares (.invalid, RFC 2606), so on a cluster
// without a catch-all AccessPolicy the answer must be the sidecar's decision NO_POLICY: a
// PERMISSION_DENIED CheckResponse with HTTP 403 for the client. With a catch-all policy the
// expected outcome is set in values (tests.check.expect: ALLOW, or another error code).
// Anything else (no answer, an RPC error, another decision) fails.
// Environment: NOX_TEST_GRPC (host:port of the Service), NOX_TEST_HTTP (its /readyz base URL),
// NOX_TEST_HOST (the :authority of the checked request), NOX_TEST_EXPECT (ALLOW or a code).
'use strict';
const http2 = require('node:http2');

const target = process.env.NOX_TEST_GRPC;
const health = process.env.NOX_TEST_HTTP;
const host = process.env.NOX_TEST_HOST || 'helm-test.nox.invalid';
const expect = process.env.NOX_TEST_EXPECT || 'NO_POLICY';
const deadlineMs = 10000;

// Protobuf wire format, the few parts a CheckRequest needs: varint, length-delimited fields.
function varint(n) {
  const out = [];
  while (n > 127) {
    out.push((n & 127) | 128);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
function field(num, value) {
  const bytes = Buffer.isBuffer(value) ? value : Buffer.from(String(value));
  return Buffer.concat([varint((num << 3) | 2), varint(bytes.length), bytes]);
}
function parse(buf) {
  const fields = {};
  let i = 0;
  const read = () => {
    let n = 0;
    let shift = 0;
    for (;;) {
      const b = buf[i++];
      n += (b & 127) * 2 ** shift;
      if (b < 128) return n;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = read();
    const num = Math.floor(key / 8);
    const type = key & 7;
    let value;
    if (type === 0) value = read();
    else if (type === 2) {
      const len = read();
      value = buf.subarray(i, i + len);
      i += len;
    } else if (type === 1) i += 8;
    else if (type === 5) i += 4;
    else throw new Error(`unexpected wire type ${type}`);
    if (value !== undefined) fields[num] = value;
  }
  return fields;
}

// envoy.service.auth.v3.CheckRequest{attributes(1){request(4){http(2){id 1, method 2,
// headers 3 (map), path 4, host 5, scheme 6, protocol 10}}}}
const header = (k, v) => field(3, Buffer.concat([field(1, k), field(2, v)]));
const httpRequest = Buffer.concat([
  field(1, `helm-test-${Date.now()}`),
  field(2, 'GET'),
  header(':authority', host),
  header(':method', 'GET'),
  header(':path', '/'),
  header('user-agent', 'nox-helm-test'),
  field(4, '/'),
  field(5, host),
  field(6, 'http'),
  field(10, 'HTTP/1.1'),
]);
const checkRequest = field(1, field(4, field(2, httpRequest)));

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

async function ready() {
  const res = await fetch(`${health}/readyz`, { signal: AbortSignal.timeout(deadlineMs) });
  if (res.status !== 200) fail(`${health}/readyz answered ${res.status}: ${await res.text()}`);
  console.log(`${health}/readyz: 200`);
}

function check() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${target}`);
    session.on('error', reject);
    const frame = Buffer.alloc(5);
    frame.writeUInt32BE(checkRequest.length, 1);
    const req = session.request({
      ':method': 'POST',
      ':path': '/envoy.service.auth.v3.Authorization/Check',
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': `${deadlineMs}m`,
    });
    const chunks = [];
    let trailers = {};
    req.setTimeout(deadlineMs, () => reject(new Error(`no answer within ${deadlineMs} ms`)));
    req.on('trailers', (t) => {
      trailers = t;
    });
    req.on('response', (h) => {
      if (h['grpc-status'] !== undefined) trailers = h; // trailers-only answer
    });
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      session.close();
      resolve({ trailers, body: Buffer.concat(chunks) });
    });
    req.on('error', reject);
    req.end(Buffer.concat([frame, checkRequest]));
  });
}

(async () => {
  if (!target || !health) fail('NOX_TEST_GRPC and NOX_TEST_HTTP must be set');
  await ready();
  const { trailers, body } = await check();
  if (trailers['grpc-status'] !== '0')
    fail(`the Check RPC failed: grpc-status ${trailers['grpc-status']} ${trailers['grpc-message'] || ''}`);
  if (body.length < 5) fail('the Check RPC answered no message');
  // CheckResponse{status(1){code 1, message 2}, denied_response(2){status(1){code 1}, body 3},
  // ok_response(3)}
  const response = parse(body.subarray(5, 5 + body.readUInt32BE(1)));
  const status = parse(response[1] || Buffer.alloc(0));
  const code = status[1] || 0;
  const message = status[2] ? status[2].toString() : '';
  const decision = code === 0 && response[3] !== undefined ? 'ALLOW' : message;
  const denied = parse(response[2] || Buffer.alloc(0));
  const httpStatus = parse(denied[1] || Buffer.alloc(0))[1];
  console.log(`Check for http://${host}/: ${decision} (code ${code}${httpStatus ? `, HTTP ${httpStatus}` : ''})`);
  if (decision !== expect) fail(`expected ${expect}, the ext_authz service decided ${decision || '(nothing)'}`);
  if (decision !== 'ALLOW' && !(httpStatus >= 400)) fail('a deny without the HTTP status for the client');
  console.log(`PASS: the ext_authz service answered a real Check with ${decision}`);
})().catch((e) => fail(e && e.stack ? e.stack : String(e)));
