import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';

export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

export interface Upstream {
  readonly port: number;
  /** Every request that reached the upstream, in order. */
  readonly seen: SeenRequest[];
  close(): Promise<void>;
}

/** The request headers the upstream echoed in a response body it wrote. */
export function echoedHeaders(body: string): Record<string, string> {
  return (JSON.parse(body) as { headers: Record<string, string> }).headers;
}

/** A small HTTP service behind Envoy that records what reaches it and echoes it back. */
export function startUpstream(): Promise<Upstream> {
  const seen: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    const entry = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    seen.push(entry);
    req.resume();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ upstream: 'hello', ...entry }));
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((res) => {
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      res({
        port,
        seen,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
