#!/usr/bin/env node
// Runs the GraphQL-over-HTTP audit suite of the `graphql-http` package (an
// independent implementation of the spec) against a running server.
//
// Usage:
//   npm ci   # once, in this directory
//   RAPPORT_AUDIT_URL=http://127.0.0.1:8080/graphql \
//   RAPPORT_AUDIT_TOKEN=<admin token> \
//   node audit.mjs
//
// Environment:
//   RAPPORT_AUDIT_URL         GraphQL endpoint to audit (required).
//   RAPPORT_AUDIT_TOKEN       Sent as `Authorization: Bearer <token>` on every
//                             request; if unset or empty no Authorization
//                             header is sent.
//   RAPPORT_AUDIT_TIMEOUT_MS  Per-request timeout, default 30000.
//
// Prints one line per audit (`ok`, `NOTE` for failed MAY audits, `WARN` for
// failed SHOULD audits, `ERROR` for failed MUST audits), the response of every
// failed audit, and a summary line. Exit status: 0 when there is no warning
// and no error, 1 otherwise, 2 on a usage error.

import { auditServer, serverAudits } from 'graphql-http';

const BODY_LIMIT = 500;

const url = process.env.RAPPORT_AUDIT_URL;
const token = process.env.RAPPORT_AUDIT_TOKEN ?? '';
const timeoutMs = Number(process.env.RAPPORT_AUDIT_TIMEOUT_MS ?? 30000);

if (!url) {
  console.error('usage: RAPPORT_AUDIT_URL=http://127.0.0.1:8080/graphql RAPPORT_AUDIT_TOKEN=<token> node audit.mjs');
  process.exit(2);
}
try {
  new URL(url);
} catch {
  console.error(`RAPPORT_AUDIT_URL is not a valid URL: ${url}`);
  process.exit(2);
}
if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
  console.error(`RAPPORT_AUDIT_TIMEOUT_MS is not a positive number: ${process.env.RAPPORT_AUDIT_TIMEOUT_MS}`);
  process.exit(2);
}
if (!token) {
  console.error('note: RAPPORT_AUDIT_TOKEN is not set, sending no Authorization header');
}

// The audits call fetchFn(url) or fetchFn(url, init) with init.headers as a
// plain object; add the bearer token (and a timeout) to every request.
function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  return fetch(input, {
    ...init,
    headers,
    signal: init.signal ?? AbortSignal.timeout(timeoutMs),
  });
}

const opts = { url, fetchFn };

function errorMessage(err) {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    return `${err.message}${cause}`;
  }
  return String(err);
}

let results;
try {
  results = await auditServer(opts);
} catch (err) {
  // auditServer rejects as a whole when any single audit hits a fatal error
  // (connection refused or reset, timeout, ...). Run the audits one by one
  // to report which ones did.
  console.error(`graphql-http: fatal error while auditing ${url}: ${errorMessage(err)}`);
  console.error('graphql-http: running the audits one at a time to find which failed');
  results = [];
  for (const audit of serverAudits(opts)) {
    try {
      results.push(await audit.fn());
    } catch (auditErr) {
      results.push({
        id: audit.id,
        name: audit.name,
        status: 'error',
        reason: `fatal: ${errorMessage(auditErr)}`,
        response: null,
      });
    }
  }
}

function truncate(text, limit = BODY_LIMIT) {
  return text.length > limit ? `${text.slice(0, limit)}… (${text.length} chars)` : text;
}

async function describeResponse(res) {
  if (!res) return ['      (no response)'];
  const lines = [
    `      response: ${res.status} ${res.statusText}`.trimEnd(),
    `      content-type: ${res.headers.get('content-type') ?? '(none)'}`,
  ];
  let body;
  try {
    // Some audits read the body before failing; it can then not be read again.
    body = res.bodyUsed ? '(body already read by the audit)' : await res.text();
  } catch (err) {
    body = `(body unreadable: ${errorMessage(err)})`;
  }
  lines.push(`      body: ${truncate(JSON.stringify(body))}`);
  return lines;
}

const LABEL = { ok: 'ok   ', notice: 'NOTE ', warn: 'WARN ', error: 'ERROR' };
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };

for (const result of results) {
  const status = result.status in counts ? result.status : 'error';
  counts[status] += 1;
  if (status === 'ok') {
    console.log(`${LABEL.ok} ${result.id} ${result.name}`);
    continue;
  }
  console.log(`${LABEL[status]} ${result.id} ${result.name}: ${result.reason}`);
  for (const line of await describeResponse(result.response)) console.log(line);
}

if (counts.notice > 0) {
  console.log(`graphql-http audit: ${counts.notice} notices (failed MAY audits, not counted as failures)`);
}
console.log(
  `graphql-http audit: ${counts.ok} ok, ${counts.warn} warnings, ${counts.error} errors`
);
process.exit(counts.warn + counts.error > 0 ? 1 : 0);
