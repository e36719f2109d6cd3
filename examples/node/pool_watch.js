#!/usr/bin/env node
// A pg.Pool that keeps serving through password rotations.
//
// A loop long-polls credential-broker (GET /credentials/{db}?wait=30s with If-None-Match). When
// the version changes, queries go to a new pg.Pool opened with the new password, and the old pool
// is ended: its idle connections close at once, busy ones once their query is done. Each pool
// opens its POOL_SIZE connections when it is made and keeps them (as the Python and Java
// examples' pools do), so logins happen at a switch, not later while a rotation is under way. A
// query whose login is rejected anyway (the rotation reached the database before the broker)
// refreshes the credentials and is retried once.
//
// Environment: as broker_client.js (BROKER_URL, BROKER_TOKEN_FILE or BROKER_TOKEN, BROKER_DB),
// and RUN_SECONDS (how long to run queries; 0, the default: until SIGTERM or SIGINT) and
// QUERY_RATE (queries a second, default 50). Prints JSON lines, never a password:
//   {"event":"ready","version_id":...}                     the pool is open
//   {"event":"switched","version_id":...,"via":"watch"}    new connections use a new version
//   {"event":"done","queries":N,"failed":F,"switches":S}   at the end; the exit status is 1 if F > 0
'use strict';

const { setTimeout: sleep } = require('node:timers/promises');
const { Pool } = require('pg');
const { BrokerClient, isAuthFailure } = require('./broker_client');

const POOL_SIZE = 4;
const WORKERS = 2;
const WAIT_SECONDS = 30;
const APPLICATION_NAME = 'pool-watch-node';

function emit(fields) {
  console.log(JSON.stringify(fields));
}

function newPool(creds) {
  const pool = new Pool({
    host: creds.host,
    port: creds.port,
    database: creds.dbname,
    user: creds.username,
    password: creds.password,
    max: POOL_SIZE,
    // Idle connections are kept, not closed after 10 s and reopened later.
    min: POOL_SIZE,
    connectionTimeoutMillis: 5000,
    application_name: APPLICATION_NAME,
  });
  // An idle connection the server closed: the pool drops it; nothing to do here.
  pool.on('error', () => {});
  return pool;
}

/** Opens the pool's connections now and hands them back to it; throws the first failure. */
async function openAll(pool) {
  const opened = await Promise.allSettled(
    Array.from({ length: POOL_SIZE }, () => pool.connect()));
  for (const result of opened) if (result.status === 'fulfilled') result.value.release();
  const failed = opened.find((result) => result.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Queries go to the pool of the current version; a new version gets a new pool. */
class RotatingPool {
  constructor(broker, creds) {
    this.broker = broker;
    this.creds = creds;
    this.pool = newPool(creds);
    this.switches = 0;
  }

  get version() {
    return this.creds.version_id;
  }

  /** Switches to `creds` if they are another version; the old pool ends once it is idle. */
  update(creds, via) {
    if (!creds || creds.version_id === this.creds.version_id) return;
    const old = this.pool;
    this.creds = creds;
    this.pool = newPool(creds);
    this.switches += 1;
    emit({ event: 'switched', version_id: creds.version_id, via });
    // Best effort: a connection that cannot be opened now is opened by the query that needs it.
    openAll(this.pool).catch(() => {});
    old.end().catch(() => {});
  }

  async query(text) {
    try {
      return await this.pool.query(text);
    } catch (err) {
      if (!isAuthFailure(err)) throw err;
      const failed = this.version;
      console.error(`pool_watch: login rejected with version ${failed}, refreshing`);
      this.update(await this.broker.refresh(failed), 'refresh');
      return this.pool.query(text);
    }
  }

  /** Long-polls the broker until `signal` aborts; errors wait a second and go on. */
  async watch(signal) {
    while (!signal.aborted) {
      try {
        this.update(await this.broker.waitForChange(this.version, WAIT_SECONDS, signal), 'watch');
      } catch (err) {
        if (signal.aborted) return;
        console.error(`pool_watch: watching the broker: ${err.message}`);
        await sleep(1000, undefined, { signal }).catch(() => {});
      }
    }
  }

  end() {
    return this.pool.end();
  }
}

async function runQueries(pool, signal, intervalMs, counts) {
  while (!signal.aborted) {
    const started = Date.now();
    try {
      await pool.query('SELECT 1');
      counts.queries += 1;
    } catch (err) {
      counts.failed += 1;
      // The message only: a pg error object can carry its connection parameters.
      console.error(`pool_watch: query failed: ${err.code ?? ''} ${err.message}`);
    }
    const left = Math.max(0, intervalMs - (Date.now() - started));
    await sleep(left, undefined, { signal }).catch(() => {});
  }
}

async function main() {
  const broker = BrokerClient.fromEnv(process.argv[2]);
  const runSeconds = Number(process.env.RUN_SECONDS || '0');
  const rate = Number(process.env.QUERY_RATE || '50');
  const pool = new RotatingPool(broker, await broker.credentials());
  await pool.query('SELECT 1');
  await openAll(pool.pool);
  emit({ event: 'ready', version_id: pool.version });
  const stop = new AbortController();
  for (const name of ['SIGTERM', 'SIGINT']) process.on(name, () => stop.abort());
  if (runSeconds > 0) setTimeout(() => stop.abort(), runSeconds * 1000);
  const counts = { queries: 0, failed: 0 };
  const watching = pool.watch(stop.signal);
  const workers = Array.from({ length: WORKERS }, () =>
    runQueries(pool, stop.signal, (WORKERS * 1000) / rate, counts));
  await Promise.all(workers);
  await watching;
  await pool.end();
  emit({ event: 'done', queries: counts.queries, failed: counts.failed, switches: pool.switches });
  if (counts.failed > 0) process.exitCode = 1;
}

main().catch((err) => {
  const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
  console.error(`pool_watch: ${err.message}${cause}`);
  process.exitCode = 1;
});
