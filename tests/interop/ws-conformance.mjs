// graphql-transport-ws conformance, driven by clients this project did not write: the
// graphql-ws npm package's client (what Apollo and urql users run) and raw sockets from the
// `ws` package for the misbehaviours no well-behaved client sends. Prints one row per situation
// (what the protocol says, what the server did) and exits non-zero on any difference.
//
//   node ws-conformance.mjs http://127.0.0.1:PORT/graphql
//
// The server must run with WS_INIT_TIMEOUT_MS=500 (so the initialisation-timeout rows take
// half a second) and a local upstream.
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';

const httpUrl = process.argv[2];
if (!httpUrl) {
  console.error('usage: node ws-conformance.mjs http://HOST:PORT/graphql');
  process.exit(2);
}
const wsUrl = httpUrl.replace(/^http/, 'ws');
const INIT_TIMEOUT_MS = 500;

async function gql(query, variables, token) {
  const res = await fetch(httpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return res.json();
}

async function signUp(tag) {
  const email = `${tag}-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`;
  const body = await gql(
    'mutation($i: SignUpInput!) { signUp(input: $i) { token } }',
    { i: { email, password: 'correct horse battery staple', name: tag } },
  );
  if (!body.data?.signUp?.token) throw new Error(`signUp failed: ${JSON.stringify(body)}`);
  return body.data.signUp.token;
}

const rows = [];
function row(situation, expected, got) {
  const ok = JSON.stringify(expected) === JSON.stringify(got);
  rows.push({ situation, expected, got, ok });
}

// A raw socket: send `messages` (strings as they are; 'ACK' waits for connection_ack), collect
// what comes back until the server closes (or `waitMs` passes: then the client closes, 1000).
function raw(messages, { protocol = 'graphql-transport-ws', waitMs = 3000 } = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, protocol);
    const received = [];
    let queue = [...messages];
    const flush = () => {
      while (queue.length && queue[0] !== 'ACK') {
        const m = queue.shift();
        ws.send(typeof m === 'string' ? m : JSON.stringify(m));
      }
    };
    ws.on('open', flush);
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      received.push(m);
      if (m.type === 'connection_ack' && queue[0] === 'ACK') {
        queue.shift();
        flush();
      }
    });
    const timer = setTimeout(() => ws.close(1000), waitMs);
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ received, code, reason: String(reason) });
    });
  });
}

const init = (token) => ({ type: 'connection_init', payload: token ? { authorization: `Bearer ${token}` } : {} });
const subscribe = (id, query, variables = {}) => ({ id, type: 'subscribe', payload: { query, variables } });
const STREAM = 'subscription($i: CompletionInput!) { completionStream(input: $i) { delta done } }';
const closeOf = (r) => `${r.code} ${r.reason}`;

const token = await signUp('conformance');

// ---- Raw sockets: what no well-behaved client sends --------------------------------------
{
  const r = await raw([subscribe('1', '{ __typename }')]);
  row('subscribe before connection_ack', '4401 Unauthorized', closeOf(r));
}
{
  const r = await raw([init(), init()], { waitMs: 3000 });
  row('a second connection_init', '4429 Too many initialisation requests', closeOf(r));
}
{
  const r = await raw(['{not json']);
  row('invalid JSON', '4400 Invalid message received', closeOf(r));
}
{
  const r = await raw([init(), 'ACK', { type: 'start', id: '1', payload: { query: '{ __typename }' } }]);
  row('unknown message type', '4400 Invalid message received', closeOf(r));
}
{
  const r = await raw([init(), 'ACK', { type: 'subscribe', payload: { query: '{ __typename }' } }]);
  row('subscribe without id', '4400 Invalid message received', closeOf(r));
}
{
  const r = await raw([], { waitMs: INIT_TIMEOUT_MS * 6 });
  row('no connection_init at all', '4408 Connection initialisation timeout', closeOf(r));
}
{
  const r = await raw([init(), 'ACK', { type: 'ping', payload: { n: 1 } }, { type: 'complete', id: 'unknown' },
    subscribe('q', '{ __typename }')], { waitMs: 1500 });
  const types = r.received.map((m) => m.type + (m.id ? `:${m.id}` : ''));
  row('ping, unknown-id complete, then a query', 'connection_ack pong next:q complete:q (socket open)',
    `${types.join(' ')} (${r.code === 1000 ? 'socket open' : closeOf(r)})`);
  const pong = r.received.find((m) => m.type === 'pong');
  row('pong echoes the ping payload', '{"n":1}', JSON.stringify(pong?.payload));
}
{
  const r = await raw([init(token), 'ACK', subscribe('s', STREAM, { i: { prompt: 'long @@tokens=200 @@pace_ms=10' } }),
    { type: 'complete', id: 's' }, { type: 'ping' }], { waitMs: 1500 });
  const after = r.received.slice(r.received.findIndex((m) => m.type === 'pong'));
  const completes = r.received.filter((m) => m.type === 'complete').length;
  row('client completes a running stream', 'no complete sent back', completes === 0 ? 'no complete sent back' : `${completes} complete(s)`);
  row('socket after a client complete', 'open', r.code === 1000 && after.length >= 1 ? 'open' : closeOf(r));
}
{
  const r = await raw([init(), 'ACK', subscribe('v', '{ nope }')], { waitMs: 1500 });
  const m = r.received.find((x) => x.id === 'v');
  row('a subscribe that fails validation', 'error with GRAPHQL_VALIDATION_FAILED, no complete',
    `${m?.type} with ${m?.payload?.[0]?.extensions?.code}${r.received.some((x) => x.type === 'complete') ? ', then complete' : ', no complete'}`);
}
{
  // `new WebSocket(url)` offers no subprotocol at all.
  const none = await new Promise((resolve) => {
    const ws = new WebSocket(wsUrl);
    ws.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
  });
  row('no acceptable subprotocol', '4406 Subprotocol not acceptable', closeOf(none));
}

// ---- Legacy subscriptions-transport-ws, raw ------------------------------------------------
{
  const r = await raw([{ type: 'connection_init', payload: {} }, 'ACK',
    { id: '1', type: 'start', payload: { query: '{ __typename }' } }, { type: 'connection_terminate' }],
  { protocol: 'graphql-ws' });
  row('legacy graphql-ws: init, start, terminate', 'connection_ack ka data:1 complete:1 / 1000',
    `${r.received.map((m) => m.type + (m.id ? `:${m.id}` : '')).join(' ')} / ${r.code}`);
}

// ---- The graphql-ws client ------------------------------------------------------------------
function client(opts = {}) {
  return createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0, ...opts });
}
function closedWith(opts) {
  return new Promise((resolve) => {
    client({ lazy: false, onNonLazyError: (e) => resolve(`${e.code} ${e.reason}`), ...opts });
  });
}
row('graphql-ws client: a bad token in connectionParams', '4403 Forbidden',
  await closedWith({ connectionParams: { authorization: 'Bearer not-a-session' } }));
row('graphql-ws client: connectionParams later than the init timeout', '4408 Connection initialisation timeout',
  await closedWith({ connectionParams: () => new Promise((r) => setTimeout(() => r({}), INIT_TIMEOUT_MS * 3)) }));
{
  const c = client({ connectionParams: { authorization: `Bearer ${token}` } });
  let text = '';
  let done = false;
  for await (const result of c.iterate({ query: STREAM, variables: { i: { prompt: 'hello conformance @@tokens=12' } } })) {
    if (result.errors) throw new Error(JSON.stringify(result.errors));
    text += result.data.completionStream.delta ?? '';
    done ||= result.data.completionStream.done;
  }
  await c.dispose();
  row('graphql-ws client: a completion streamed token by token', 'done, with text', done && text.length > 0 ? 'done, with text' : `done=${done} text=${JSON.stringify(text)}`);
}
{
  const got = await new Promise((resolve) => {
    const c = client({ connectionParams: { authorization: `Bearer ${token}` } });
    c.subscribe({ query: '{ nope }' }, {
      next: () => {},
      error: (e) => { resolve(Array.isArray(e) ? `error: ${e[0]?.extensions?.code}` : `closed ${e.code}`); c.dispose(); },
      complete: () => { resolve('complete'); c.dispose(); },
    });
  });
  row('graphql-ws client: validation failure reaches sink.error', 'error: GRAPHQL_VALIDATION_FAILED', got);
}
{
  const got = await new Promise((resolve) => {
    const c = client({
      connectionParams: { authorization: `Bearer ${token}` },
      generateID: () => 'same',
      on: { closed: (e) => resolve(`${e.code} ${e.reason}`) },
    });
    const sink = { next() {}, error() {}, complete() {} };
    c.subscribe({ query: STREAM, variables: { i: { prompt: 'one @@tokens=200 @@pace_ms=10' } } }, sink);
    setTimeout(() => c.subscribe({ query: STREAM, variables: { i: { prompt: 'two' } } }, sink), 200);
  });
  row('graphql-ws client: a duplicate operation id', '4409 Subscriber for same already exists', got);
}
{
  // Sign out over HTTP: the same session's open socket is closed, 4403, and cannot run more.
  const own = await signUp('signout');
  const got = await new Promise((resolve) => {
    const c = client({
      lazy: false,
      connectionParams: { authorization: `Bearer ${own}` },
      on: {
        connected: async () => {
          const out = await gql('mutation { signOut }', {}, own);
          if (out.data?.signOut !== true) resolve(`signOut failed: ${JSON.stringify(out)}`);
        },
        closed: (e) => resolve(`${e.code} ${e.reason}`),
      },
      onNonLazyError: () => {},
    });
    void c;
  });
  row('graphql-ws client: signOut over HTTP while connected', '4403 Forbidden', got);
}

const width = Math.max(...rows.map((r) => r.situation.length));
console.log(`${'situation'.padEnd(width)} | protocol | server | ok`);
for (const r of rows) {
  console.log(`${r.situation.padEnd(width)} | ${r.expected} | ${r.got} | ${r.ok ? 'ok' : 'DIFFERENT'}`);
}
const failed = rows.filter((r) => !r.ok).length;
console.log(`\n${rows.length - failed} of ${rows.length} rows as the protocol says`);
process.exit(failed ? 1 : 0);
