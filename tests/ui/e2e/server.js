// Starts the real `spoor serve` ($SPOOR_BIN, default target/debug/spoor) on free loopback
// ports with a temporary data dir and config file, as users run it.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '../../..');
export const SPOOR_BIN = process.env.SPOOR_BIN ?? join(REPO, 'target/debug/spoor');

/** A free 127.0.0.1 port (the listener is closed before the server binds it). */
function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => ok(port));
    });
  });
}

/**
 * @param {string} extraYaml  more configuration, appended to the file
 * @param {Record<string, string>} [files]  files written next to the config (tokens, …)
 */
export async function startSpoor(extraYaml = '', files = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'spoor-ui-'));
  const [api, grpc, http] = [await freePort(), await freePort(), await freePort()];
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const config = join(dir, 'config.yaml');
  writeFileSync(
    config,
    `server:\n  http_listen: 127.0.0.1:${api}\n  otlp_grpc_listen: 127.0.0.1:${grpc}\n  otlp_http_listen: 127.0.0.1:${http}\n` +
      `storage:\n  data_dir: ${join(dir, 'data')}\n${extraYaml.replaceAll('$DIR', dir)}`,
  );
  const log = join(dir, 'spoor.log');
  const { openSync } = await import('node:fs');
  const child = spawn(SPOOR_BIN, ['serve', '--config', config], { stdio: ['ignore', 'ignore', openSync(log, 'a')] });
  let exited = null;
  child.on('exit', (code) => (exited = code));
  const base = `http://127.0.0.1:${api}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited !== null) throw new Error(`spoor exited with ${exited}:\n${readFileSync(log, 'utf8')}`);
    try {
      const r = await fetch(`${base}/ready`);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`spoor not ready in 60s:\n${readFileSync(log, 'utf8')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base,
    otlp: `http://127.0.0.1:${http}`,
    dir,
    log: () => readFileSync(log, 'utf8'),
    async stop() {
      if (exited === null) {
        const done = new Promise((r) => child.on('exit', r));
        child.kill('SIGTERM');
        await done;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
