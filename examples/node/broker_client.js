#!/usr/bin/env node
// Connect to PostgreSQL with credentials from credential-broker, surviving a password rotation.
//
// Fetches GET {BROKER_URL}/credentials/{db}, connects with node-postgres, and when the login is
// rejected (SQLSTATE 28P01 or 28000) calls POST /credentials/{db}/refresh once (If-Match: the
// version that failed) and connects again. Any other error, or a second rejected login, is fatal.
//
// Environment: BROKER_URL (default http://127.0.0.1:2775), BROKER_TOKEN_FILE or BROKER_TOKEN,
// BROKER_DB (or the first argument). Prints one JSON line: {"user", "refreshed", "version_id"}.
// Needs Node 20 or newer (built-in fetch) and `pg` (package.json).
'use strict';

const fs = require('node:fs');
const { Client } = require('pg');

const HTTP_TIMEOUT_MS = 5000; // per broker request
const CONNECT_TIMEOUT_MS = 5000; // per database connection attempt
const MAX_503_RETRIES = 5; // 503 answers (overloaded, credentials_expired) are retried this often
const MAX_RETRY_AFTER_S = 5; // a longer Retry-After is capped

// invalid_password, invalid_authorization_specification
const AUTH_FAILURES = new Set(['28P01', '28000']);

/** The broker answered with an error: HTTP status and the stable `code` from its JSON body. */
class BrokerError extends Error {
  constructor(status, code, message) {
    super(`broker answered ${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** Whether a pg error means the database rejected the user name or password. */
function isAuthFailure(err) {
  return AUTH_FAILURES.has(err && err.code);
}

/** Seconds to wait from a Retry-After header (delta-seconds), 1 when absent, capped. */
function retryAfter(value) {
  const seconds = Number.parseInt(value ?? '', 10);
  return Number.isNaN(seconds) ? 1 : Math.min(Math.max(seconds, 0), MAX_RETRY_AFTER_S);
}

/** (code, message) from the broker's `{"error": {"code", "message"}}` body. */
async function errorCode(response) {
  try {
    const body = await response.json();
    return [String(body.error.code), String(body.error.message)];
  } catch {
    return ['unknown', `HTTP ${response.status} without an error body`];
  }
}

/** Reads credentials from the broker and opens connections that survive one rotation. */
class BrokerClient {
  constructor(url, token, db) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.db = db;
  }

  static fromEnv(db) {
    const env = process.env;
    const token = env.BROKER_TOKEN_FILE
      ? fs.readFileSync(env.BROKER_TOKEN_FILE, 'utf8').trim()
      : (env.BROKER_TOKEN ?? '').trim();
    if (!token) throw new Error('set BROKER_TOKEN_FILE or BROKER_TOKEN');
    db = db || env.BROKER_DB;
    if (!db) throw new Error('set BROKER_DB or pass the database name');
    return new BrokerClient(env.BROKER_URL || 'http://127.0.0.1:2775', token, db);
  }

  /** The current credentials (the broker's JSON body). */
  credentials() {
    return this.#call('GET', `/credentials/${encodeURIComponent(this.db)}`, {});
  }

  /** Asks the broker to fetch again, naming the version the database rejected. */
  refresh(failedVersion) {
    const headers = { 'If-Match': `"${failedVersion}"` };
    return this.#call('POST', `/credentials/${encodeURIComponent(this.db)}/refresh`, headers);
  }

  /**
   * A long poll: the credentials once the broker serves another version than `version`, or null
   * when `waitSeconds` passed without a change (304). `signal` aborts it early.
   */
  waitForChange(version, waitSeconds = 30, signal = undefined) {
    const headers = { 'If-None-Match': `"${version}"` };
    const path = `/credentials/${encodeURIComponent(this.db)}?wait=${waitSeconds}s`;
    return this.#call('GET', path, headers, waitSeconds * 1000 + HTTP_TIMEOUT_MS, signal);
  }

  async #call(method, path, extra, timeoutMs = HTTP_TIMEOUT_MS, signal = undefined) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'application/json', ...extra };
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(timeoutMs);
      const response = await fetch(this.url + path, {
        method,
        headers,
        signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
      });
      if (response.status === 304) return null;
      if (response.ok) return response.json();
      if (response.status === 503 && attempt < MAX_503_RETRIES) {
        const delay = retryAfter(response.headers.get('retry-after'));
        const [code] = await errorCode(response);
        console.error(`broker_client: ${method} ${path}: 503 ${code}, retrying in ${delay} s`);
        await new Promise((resolve) => setTimeout(resolve, delay * 1000));
        continue;
      }
      throw new BrokerError(response.status, ...(await errorCode(response)));
    }
  }

  /** A connected pg Client and how it was made: {client, creds, refreshed}. */
  async connect() {
    let creds = await this.credentials();
    try {
      return { client: await openClient(creds), creds, refreshed: false };
    } catch (err) {
      if (!isAuthFailure(err)) throw err;
      console.error(`broker_client: login rejected with version ${creds.version_id}, refreshing`);
    }
    creds = await this.refresh(creds.version_id);
    // A second rejection propagates: the broker has nothing newer to offer.
    return { client: await openClient(creds), creds, refreshed: true };
  }
}

async function openClient(creds) {
  // Separate fields, not a connection string: the password needs no escaping.
  const client = new Client({
    host: creds.host,
    port: creds.port,
    database: creds.dbname,
    user: creds.username,
    password: creds.password,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  await client.connect();
  return client;
}

async function main() {
  const broker = BrokerClient.fromEnv(process.argv[2]);
  const { client, creds, refreshed } = await broker.connect();
  try {
    const result = await client.query('SELECT current_user AS user');
    const user = result.rows[0].user;
    console.log(JSON.stringify({ user, refreshed, version_id: creds.version_id }));
  } finally {
    await client.end();
  }
}

if (require.main === module) {
  main().catch((err) => {
    // Messages only (never the error object: a pg error can carry its connection parameters).
    const kind = err instanceof BrokerError ? '' : err.code ? `database error ${err.code}: ` : '';
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    console.error(`broker_client: ${kind}${err.message}${cause}`);
    process.exitCode = 1;
  });
}

module.exports = { BrokerClient, BrokerError, isAuthFailure };
