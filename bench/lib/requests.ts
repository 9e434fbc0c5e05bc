/**
 * A CheckRequest shaped like the ones Envoy sends for a browser-ish API call (~1.4 KB on
 * the wire), in the proto3 JSON form ghz takes.
 */
export function realisticCheckRequest(path: string): object {
  return {
    attributes: {
      source: { address: { socketAddress: { address: '10.1.2.3', portValue: 53211 } } },
      destination: { address: { socketAddress: { address: '127.0.0.1', portValue: 10000 } } },
      request: {
        time: '2026-11-25T12:00:00Z',
        http: {
          id: '7152936504394586118',
          method: 'GET',
          headers: {
            ':authority': 'api.example.com',
            ':method': 'GET',
            ':path': path,
            ':scheme': 'https',
            accept: 'application/json, text/plain, */*',
            'accept-encoding': 'gzip, deflate, br',
            'accept-language': 'en-GB,en;q=0.9',
            'user-agent':
              'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
            'x-forwarded-proto': 'https',
            'x-request-id': '0b1e4c4e-2f51-4c8e-9d0c-1f0f6f2a8b11',
            'x-envoy-expected-rq-timeout-ms': '15000',
            referer: 'https://app.example.com/dashboard',
            cookie: 'theme=dark; _ga=GA1.1.123456789.1700000000',
          },
          path,
          host: 'api.example.com',
          scheme: 'https',
          protocol: 'HTTP/1.1',
        },
      },
      metadataContext: {},
    },
  };
}
