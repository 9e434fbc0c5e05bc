import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

const dir = join(dirname(fileURLToPath(import.meta.url)), 'static');

/**
 * The admin page: audit search with filters, and one subject's decisions over time as a chart
 * (static/app.mjs). Read-only, and no data in the files: the page calls the API with the token
 * the user types, so what it shows is what RBAC lets that token read. The files are read once,
 * at start; the CSP allows this origin's script, style and API only.
 */
export function pageRoutes(app: FastifyInstance): void {
  const files: Record<string, { type: string; body: Buffer }> = {
    '/ui': { type: 'text/html; charset=utf-8', body: readFileSync(join(dir, 'index.html')) },
    '/ui/app.mjs': { type: 'text/javascript; charset=utf-8', body: readFileSync(join(dir, 'app.mjs')) },
    '/ui/style.css': { type: 'text/css; charset=utf-8', body: readFileSync(join(dir, 'style.css')) },
  };
  const csp =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
  for (const [path, f] of Object.entries(files)) {
    app.get(path, { schema: { hide: true } }, async (_req, reply) =>
      reply
        .type(f.type)
        .header('content-security-policy', csp)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache')
        .send(f.body),
    );
  }
  app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui'));
}
