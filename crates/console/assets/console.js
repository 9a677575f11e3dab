// The dev console's page: the JS client (./edgepush.js, bundled from
// clients/js) connected as one user, messages as they arrive, a form that
// sends through collect, and the edge nodes' figures from their /metrics.
import { EdgepushClient } from './edgepush.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const config = await (await fetch('api/config')).json();
const nodeName = new Map(config.nodes.map((n) => [n.ws, n.name]));

let client;
let connectedOnce = false;
const shown = new Set();
let shownCount = 0;
let duplicatesShown = 0;

function log(text, kind = '') {
  const li = document.createElement('li');
  li.className = kind;
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  const list = $('log');
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function refreshFacts() {
  $('last-seq').textContent = client?.lastSeq ?? '-';
  $('handled-seq').textContent = client?.handledSeq ?? '-';
  $('reconnects').textContent = client?.stats.reconnects ?? 0;
  $('dups').textContent = client?.stats.duplicatesDropped ?? 0;
}

function showMessage(message) {
  const key = `${message.topic ?? ''}:${message.seq}`;
  const row = document.createElement('tr');
  if (shown.has(key)) {
    // The client promises this never happens; make it visible if it does.
    duplicatesShown += 1;
    row.className = 'duplicate';
  }
  shown.add(key);
  shownCount += 1;
  row.dataset.seq = String(message.seq);
  row.dataset.topic = message.topic ?? '';
  const cells = [
    message.seq,
    message.topic ?? '',
    message.id.slice(0, 12),
    new Date().toISOString().slice(11, 23),
    nodeName.get(client?.node) ?? client?.node ?? '',
    JSON.stringify(message.data),
  ];
  for (const value of cells) {
    const td = document.createElement('td');
    td.textContent = String(value);
    row.append(td);
  }
  $('messages').tBodies[0].prepend(row);
  $('message-count').textContent = String(shownCount);
  // The message counts as handled once this listener returns.
  queueMicrotask(refreshFacts);
}

function setStatus(state) {
  const badge = $('status');
  badge.textContent = state;
  badge.className = `badge ${state}`;
  badge.dataset.state = state;
  $('connect').disabled = state !== 'disconnected';
  $('disconnect').disabled = state === 'disconnected';
  $('user').disabled = state !== 'disconnected';
}

function connect(user, remember) {
  client = new EdgepushClient({
    nodes: config.nodes.map((n) => n.ws),
    getToken: async () => {
      const response = await fetch(`api/token?user=${encodeURIComponent(user)}`);
      const body = await response.json();
      if (!response.ok) throw new Error(body.error?.message ?? `HTTP ${response.status}`);
      return body.token;
    },
    storage: remember ? localStorage : null,
    ack: { maxMessages: 16, maxDelayMs: 250 },
    backoff: { initialMs: 200, maxMs: 5000 },
  });
  client.on('message', showMessage);
  client.on('state', (event) => {
    setStatus(event.state);
    if (event.state === 'connected') {
      $('node').textContent = `${nodeName.get(event.node) ?? ''} ${event.node}`;
      $('conn').textContent = event.connId;
      if (!connectedOnce) {
        connectedOnce = true;
        const after = client.lastSeq;
        $('resumed').textContent = after === undefined ? 'the position the node has acked' : `seq ${after}`;
      }
      log(`connected to ${nodeName.get(event.node)} (${event.node}) as ${event.userId}, after ${client.lastSeq ?? '(acked)'}`, 'state');
    } else {
      $('conn').textContent = '-';
      const why = event.code !== undefined ? ` (close ${event.code}${event.reason ? ` ${event.reason}` : ''})` : event.reason ? ` (${event.reason})` : '';
      log(`${event.state}${why}`, 'state');
    }
    refreshFacts();
  });
  client.on('error', (error) => log(`${error.fatal ? 'FATAL ' : ''}${error.code}: ${error.message}`, 'error'));
  for (const topic of subscriptionsWanted) subscribe(topic);
  client.connect();
}

// ---- connection form ---------------------------------------------------

$('connect-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (client && client.state !== 'disconnected') return;
  connect($('user').value.trim(), $('remember').checked);
});
$('disconnect').addEventListener('click', () => client?.disconnect());
// A reload or a closed tab acks and stores what the page has shown.
addEventListener('pagehide', () => client?.disconnect());

// ---- sending -----------------------------------------------------------

function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

$('send-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const kind = new FormData(event.target).get('kind');
  const to = $('send-to').value.trim();
  const data = parseData($('send-data').value);
  const count = Math.max(1, Math.min(100, Number($('send-count').value) || 1));
  const seqs = [];
  try {
    for (let i = 0; i < count; i++) {
      const url = kind === 'topic' ? `/v1/topics/${encodeURIComponent(to)}/messages` : config.collect;
      const body = kind === 'topic' ? { data } : { to: [to], data };
      const response = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${config.api_key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(`${response.status} ${answer.error?.code}: ${answer.error?.message}`);
      seqs.push(answer.seq ?? answer.messages?.[0]?.seq);
    }
    $('send-result').textContent = `accepted: seq ${seqs[0]}${seqs.length > 1 ? `..${seqs.at(-1)}` : ''}`;
  } catch (error) {
    $('send-result').textContent = `refused: ${error.message}`;
  }
});

// ---- topics ------------------------------------------------------------

const subscriptionsWanted = new Set();

function subscribe(topic) {
  subscriptionsWanted.add(topic);
  if (!client || client.getSubscription(topic)) return;
  const sub = client.newSubscription(topic);
  const item = document.createElement('li');
  item.dataset.topic = topic;
  const render = () => (item.textContent = `${topic}: ${sub.state}${sub.lastSeq !== undefined ? `, seq ${sub.lastSeq}` : ''}`);
  sub.on('state', render);
  sub.on('message', (m) => {
    showMessage(m);
    render();
  });
  sub.on('error', (error) => log(`${topic}: ${error.message}`, 'error'));
  render();
  $('subscriptions').append(item);
  sub.subscribe();
}

if (config.topics) {
  $('topic-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const topic = $('topic').value.trim();
    if (topic) subscribe(topic);
  });
} else {
  for (const el of document.querySelectorAll('#topic-form input, #topic-form button, .topic-only input')) el.disabled = true;
  $('topics-note').textContent = 'These nodes do not speak topic frames yet (issue 10): subscriptions and topic sends are off.';
}

// ---- nodes -------------------------------------------------------------

const previous = new Map();

async function pollNodes() {
  let nodes;
  try {
    nodes = (await (await fetch('api/nodes')).json()).nodes;
  } catch {
    return;
  }
  const now = performance.now();
  const body = $('nodes').tBodies[0];
  body.replaceChildren();
  let hint = '';
  for (const node of nodes) {
    const figures = node.figures;
    let rate = '-';
    const before = previous.get(node.name);
    if (figures && before && figures.frames_written_total >= before.total) {
      rate = ((figures.frames_written_total - before.total) / ((now - before.at) / 1000)).toFixed(1);
    }
    if (figures) previous.set(node.name, { total: figures.frames_written_total, at: now });
    const here = client?.state === 'connected' && client.node === node.ws;
    const row = document.createElement('tr');
    row.dataset.node = node.name;
    const cells = [
      [`${node.name}${here ? '  <- this page' : ''}`, here ? 'here' : ''],
      [node.pid === null ? 'in process' : node.pid || '-', ''],
      [node.up ? 'up' : 'down', node.up ? 'up' : 'down'],
      [figures ? figures.connections : '-', 'connections'],
      [rate, 'rate'],
      [figures ? figures.frames_written_total : '-', ''],
    ];
    for (const [value, cls] of cells) {
      const td = document.createElement('td');
      td.textContent = String(value);
      if (cls) td.className = cls;
      row.append(td);
    }
    body.append(row);
    if (here && node.pid) hint = `Kill the node this page is on from a terminal: <code>kill -9 ${node.pid}</code>; the page moves to the other node and misses nothing.`;
  }
  const anyProcess = nodes.some((n) => n.pid !== null);
  $('kill-hint').innerHTML =
    hint || (anyProcess ? '' : 'The nodes run inside the dev process; start dev mode with <code>--node-processes</code> (and Redis + MongoDB) to kill one from a terminal.');
}
setInterval(pollNodes, 1000);
void pollNodes();

// ---- start -------------------------------------------------------------

if (params.has('user')) $('user').value = params.get('user');
if (params.get('remember') === '0') $('remember').checked = false;
if (params.get('to')) $('send-to').value = params.get('to');
else $('send-to').value = $('user').value;
for (const topic of params.getAll('topic')) subscriptionsWanted.add(topic);
if (params.get('connect') === '1') connect($('user').value.trim(), $('remember').checked);

// For tests and the curious: the client and what the page has shown.
window.edgepushConsole = {
  get client() {
    return client;
  },
  get shown() {
    return shownCount;
  },
  get duplicatesShown() {
    return duplicatesShown;
  },
};
