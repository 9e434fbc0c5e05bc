// Copies the non-TypeScript files the compiled programs read at run time (Lua scripts,
// SQL migrations, generated protobuf code, the admin page) next to their compiled modules in dist/.
import { cpSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// (and the admin page's files: admin/ui/static/, its script included)
const wanted = /\.(lua|sql|cjs)$|\/ui\/static\/[^/]+\.(html|css|mjs)$/;
const roots = ['common', 'sidecar', 'operator', 'admin', 'proto'];

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (wanted.test(path)) {
      const target = join(root, 'dist', relative(root, path));
      mkdirSync(dirname(target), { recursive: true });
      cpSync(path, target);
    }
  }
}
for (const r of roots) if (existsSync(join(root, r))) walk(join(root, r));
