// Starts and stops a real roomcast server for tests (dev mode, a temporary
// data dir, port 0 unless given), reading its address from the
// "roomcast listening" log line. Used by this package's tests and by
// tests/browser.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The roomcast binary: $ROOMCAST_BIN, else target/debug/roomcast of this checkout. */
export function serverBinary() {
  const path = process.env.ROOMCAST_BIN || join(here, "..", "..", "..", "target", "debug", "roomcast");
  return existsSync(path) ? path : null;
}

export class Server {
  /**
   * Starts the server; `extra` are more `serve` flags. Dev mode unless
   * `jwtSecret` is given (then auth.mode = jwt with that HS secret).
   */
  static async start({ listen = "127.0.0.1:0", dataDir, extra = [], jwtSecret } = {}) {
    const server = new Server();
    server.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), "roomcast-js-"));
    // A data dir made here goes with `close`; one given is the caller's.
    server.ownsDataDir = dataDir === undefined;
    server.extra = extra;
    server.auth = jwtSecret ? ["--jwt-secret", jwtSecret] : ["--auth-mode", "none"];
    await server.spawn(listen);
    return server;
  }

  async spawn(listen) {
    const bin = serverBinary();
    if (!bin) throw new Error("no roomcast binary (build it, or set ROOMCAST_BIN)");
    const args = ["serve", "--listen", listen, "--no-pin", "--shards", "2", ...this.auth,
      "--data-dir", this.dataDir, "--log-level", "info", ...this.extra];
    this.child = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"], env: { PATH: process.env.PATH ?? "" } });
    this.log = [];
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
    const listening = await new Promise((resolve, reject) => {
      let buffer = "";
      const timer = setTimeout(() => reject(new Error("server did not start:\n" + this.log.join("\n"))), 20000);
      this.child.stderr.setEncoding("utf8");
      this.child.stderr.on("data", (chunk) => {
        buffer += chunk;
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          this.log.push(line);
          if (line.includes("roomcast listening")) {
            clearTimeout(timer);
            resolve(line);
          }
        }
      });
      this.exited.then(({ code }) => reject(new Error(`server exited (${code}):\n` + this.log.join("\n"))));
    });
    const addr = /addr=(\S+)/.exec(listening.replace(/\x1b\[[0-9;]*m/g, ""));
    if (!addr) throw new Error("no addr= in " + listening);
    this.addr = addr[1];
    this.http = "http://" + this.addr;
    this.ws = "ws://" + this.addr;
  }

  /** SIGTERM (drain, close 1001), wait for the exit. */
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    await this.exited;
  }

  /** `stop`, then removes the data dir if `start` made it: a test's last call. */
  async close() {
    await this.stop();
    if (this.ownsDataDir) {
      rmSync(this.dataDir, { recursive: true, force: true });
      this.ownsDataDir = false;
    }
  }

  /** Stops the server and starts it again on the same address and data dir. */
  async restart(extra = this.extra) {
    await this.stop();
    this.extra = extra;
    await this.spawn(this.addr);
  }
}

/** An HS256 JWT with `claims`, signed with `secret`. */
export function hs256(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}
