// The client half of the scale-out phase (run by tests/e2e/scale.sh): a real browser
// (Debian's chromium, headless, playwright-core) logged in through webui's proxy in
// front of several real Open WebUI replicas, plus a second client hammering API GETs
// with the browser's session token. It proves, against the replicas' own access logs:
//
//   spread: while the browser's answer streams over socket.io (frames on the
//           websocket and a growing DOM), the API client's GETs all answer 200 and
//           land on every replica (each request is tagged `e2e=<id>` and found in
//           exactly one replica's log); no replica logs a 401; the browser is never
//           sent to /auth.
//   kill:   with the API client running, the replica holding the browser's websocket
//           is killed (`docker kill`): no GET fails (the proxy retries what it may),
//           the page opens a new websocket by itself (no reload) and is still logged
//           in, a new message in the same chat still streams, and the killed replica
//           comes back (webui's supervision) and gets requests again.
//
//   node scale.mjs OUT.json
//
// Environment (set by scale.sh): E2E_URL, E2E_DOMAIN, E2E_HOME (a $HOME whose
// ~/.pki/nssdb trusts the site's CA), E2E_CA (that CA's PEM, for the API client),
// E2E_PROFILE, E2E_ARTIFACTS, E2E_MODEL, E2E_EXPECT, E2E_ADMIN_EMAIL,
// E2E_ADMIN_PASSWORD, E2E_PROXY_SOCKET, E2E_DOCKER (docker CLI), E2E_PROJECT (the
// replicas are its containers labelled webui.role=open-webui), E2E_REPLICAS (how many),
// E2E_MIN_STATES (default 3), E2E_RETURN_TIMEOUT_S (default 300).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { forward } from './forward.mjs';

const [outFile] = process.argv.slice(2);
const env = (k) => {
	const v = process.env[k];
	if (!v) throw new Error(`${k} is not set (run tests/e2e/scale.sh)`);
	return v;
};
const URL_ = env('E2E_URL');
const ORIGIN = new URL(URL_);
const ARTIFACTS = env('E2E_ARTIFACTS');
const MODEL = env('E2E_MODEL');
const EXPECT = env('E2E_EXPECT');
const DOCKER = env('E2E_DOCKER');
const PROJECT = env('E2E_PROJECT');
const REPLICAS = Number(env('E2E_REPLICAS'));
const MIN_STATES = Number(process.env.E2E_MIN_STATES || 3);
const RETURN_TIMEOUT_MS = Number(process.env.E2E_RETURN_TIMEOUT_S || 300) * 1000;
const ADMIN = { email: env('E2E_ADMIN_EMAIL'), password: env('E2E_ADMIN_PASSWORD') };
// Every API request carries e2e=<RUN>-<phase>-<n>: its line in a replica's log names it.
const RUN = crypto.randomBytes(4).toString('hex');

const steps = [];
const t0 = Date.now();
let stepName = null;
let stepT = 0;
function begin(name) {
	stepName = name;
	stepT = Date.now();
	console.log(`  scale: ${name} ...`);
}
function done(detail) {
	steps.push({ name: stepName, ms: Date.now() - stepT, detail: detail ?? null });
	console.log(`  scale: ${stepName}: ${Date.now() - stepT} ms${detail ? ` — ${detail}` : ''}`);
	stepName = null;
}
const log = (s) => console.log(`  scale: ${s}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const norm = (s) => (s ?? '').replace(/\s+/g, ' ').trim();

// ------------------------------------------------------------------ docker
function docker(...args) {
	// Both streams: Open WebUI logs to stderr and stdout.
	return execFileSync(DOCKER, args, { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
}
// `docker logs` writes stdout and stderr apart: run it through a shell to get both.
function replicaLog(name, since) {
	try {
		return execFileSync('sh', ['-c', '"$0" logs --since "$1" "$2" 2>&1', DOCKER, since, name], {
			encoding: 'utf8',
			maxBuffer: 256 << 20,
		});
	} catch (e) {
		return `${e.stdout ?? ''}`;
	}
}
function replicas() {
	const names = docker(
		'ps', '-a', '--filter', `label=webui.project=${PROJECT}`, '--filter', 'label=webui.role=open-webui',
		'--format', '{{.Names}}',
	)
		.split('\n')
		.filter(Boolean)
		.sort();
	return names;
}
function inspect(name) {
	try {
		return JSON.parse(docker('inspect', name))[0];
	} catch {
		return null;
	}
}
const dockerNow = () => new Date().toISOString();

// Access-log lines of uvicorn in Open WebUI: `... - 127.0.0.1:0 - "GET /path?q HTTP/1.1" 200`.
const ACCESS = /"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) HTTP\/[\d.]+" (\d{3})/;
function parseLog(text) {
	const tagged = new Map(); // e2e id -> status
	const statuses = [];
	const lines = text.split('\n');
	for (const line of lines) {
		const a = ACCESS.exec(line);
		if (a) {
			statuses.push({ method: a[1], path: a[2], status: Number(a[3]) });
			const m = /[?&]e2e=([\w-]+)/.exec(a[2]);
			if (m) tagged.set(m[1], Number(a[3]));
		}
	}
	return { tagged, statuses };
}

// ------------------------------------------------------------------ the API client
// A second client: Node's https with the browser's token, through the same proxy
// (the forwarded port in this network namespace), the site's CA and name verified.
const CA = fs.readFileSync(env('E2E_CA'));
const agent = new https.Agent({ keepAlive: true, maxSockets: 16, ca: CA, servername: ORIGIN.hostname });
function get(pathAndQuery, token) {
	return new Promise((resolve) => {
		const t = Date.now();
		const req = https.request(
			{
				host: '127.0.0.1',
				port: Number(ORIGIN.port || 443),
				path: pathAndQuery,
				method: 'GET',
				agent,
				servername: ORIGIN.hostname,
				headers: { Host: ORIGIN.host, Authorization: `Bearer ${token}`, Accept: 'application/json' },
				timeout: 30_000,
			},
			(res) => {
				let body = '';
				res.setEncoding('utf8');
				res.on('data', (c) => (body.length < 4096 ? (body += c) : null));
				res.on('end', () => resolve({ status: res.statusCode, ms: Date.now() - t, body }));
				res.on('error', (e) => resolve({ status: 0, ms: Date.now() - t, err: `response: ${e.message}` }));
			},
		);
		req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
		req.on('error', (e) => resolve({ status: 0, ms: Date.now() - t, err: e.message }));
		req.end();
	});
}

/** Workers sending GETs back to back (paced) until stop(); every result kept. */
function hammer(phase, token, { workers = 4, paceMs = 40 } = {}) {
	const results = [];
	let n = 0;
	let running = true;
	const paths = ['/api/v1/chats/?page=1&', '/api/models?'];
	const loops = Array.from({ length: workers }, async () => {
		while (running) {
			const i = n++;
			const id = `${RUN}-${phase}-${i}`;
			const p = `${paths[i % paths.length]}e2e=${id}`;
			const at = Date.now();
			const r = await get(p, token);
			results.push({ id, path: p, at, ...r });
			if (r.status !== 200 && results.filter((x) => x.status !== 200).length <= 10)
				log(`API client: GET ${p} -> ${r.status || 'no answer'} ${r.err ?? (r.body ?? '').slice(0, 200)}`);
			await sleep(paceMs);
		}
	});
	return {
		results,
		async stop() {
			running = false;
			await Promise.all(loops);
			return results;
		},
	};
}
function summary(results) {
	const failed = results.filter((r) => r.status !== 200);
	const ms = results.map((r) => r.ms).sort((a, b) => a - b);
	const q = (f) => ms[Math.min(ms.length - 1, Math.floor(f * ms.length))] ?? 0;
	return { total: results.length, failed, p50: q(0.5), p99: q(0.99), max: ms[ms.length - 1] ?? 0 };
}

// ------------------------------------------------------------------ the browser
fs.mkdirSync(ARTIFACTS, { recursive: true });
if (process.env.E2E_PROXY_SOCKET) {
	// In a network namespace of its own (scale.sh): the proxy's port comes in through a
	// Unix socket, for the browser and the API client alike.
	await forward(`tcp:127.0.0.1:${ORIGIN.port}`, `unix:${process.env.E2E_PROXY_SOCKET}`);
}
const context = await chromium.launchPersistentContext(env('E2E_PROFILE'), {
	executablePath: '/usr/bin/chromium',
	headless: true,
	env: { ...process.env, HOME: env('E2E_HOME') },
	args: [
		'--no-sandbox',
		'--disable-gpu',
		'--disable-quic',
		'--no-first-run',
		'--disable-background-networking',
		'--disable-component-update',
		'--disable-sync',
		`--host-resolver-rules=MAP ${env('E2E_DOMAIN')} 127.0.0.1`,
	],
	viewport: { width: 1280, height: 900 },
	ignoreHTTPSErrors: false,
});
// The page's WebSocket objects, so that the test can send a probe on socket.io's.
await context.addInitScript(() => {
	const Orig = window.WebSocket;
	window.__e2eWs = [];
	window.WebSocket = new Proxy(Orig, {
		construct(target, args) {
			const ws = new target(...args);
			window.__e2eWs.push(ws);
			return ws;
		},
	});
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(30_000);
const consoleLog = [];
page.on('console', (m) => consoleLog.push(`${new Date().toISOString()} [${m.type()}] ${m.text()}`));
page.on('pageerror', (e) => consoleLog.push(`${new Date().toISOString()} [pageerror] ${e.message}`));
// Every visit to /auth after the login: a lost session.
const authVisits = [];
let loggedIn = false;
page.on('framenavigated', (f) => {
	if (f === page.mainFrame() && loggedIn && new URL(f.url()).pathname.startsWith('/auth')) authVisits.push(f.url());
});
// socket.io websockets: when opened and closed, and every frame received (time, text).
const sockets = [];
page.on('websocket', (ws) => {
	if (!ws.url().includes('/ws/socket.io')) return;
	const s = { url: ws.url(), opened: Date.now(), closed: null, frames: [] };
	sockets.push(s);
	ws.on('framereceived', (f) => s.frames.push({ t: Date.now(), text: typeof f.payload === 'string' ? f.payload : '' }));
	ws.on('close', () => (s.closed = Date.now()));
});
const openSockets = () => sockets.filter((s) => s.closed === null);

async function dismissPopups() {
	for (const name of [/okay, let's go/i, /^ok/i, /^close$/i, /^dismiss$/i]) {
		const b = page.getByRole('button', { name }).first();
		if (await b.isVisible().catch(() => false)) await b.click({ timeout: 2000 }).catch(() => {});
	}
	await page.keyboard.press('Escape').catch(() => {});
}
const token = () => page.evaluate(() => localStorage.getItem('token'));
async function me() {
	return page.evaluate(async () => {
		const r = await fetch('/api/v1/auths/', { headers: { Authorization: `Bearer ${localStorage.getItem('token')}` } });
		return { status: r.status, body: await r.text() };
	});
}

/** The answer text a socket.io frame carries, or null: an `events` message of type
 *  response:completion (output_text delta) or chat:completion (choices[].delta). */
function answerDelta(text) {
	if (!text.startsWith('42[')) return null;
	let msg;
	try {
		msg = JSON.parse(text.slice(2));
	} catch {
		return null;
	}
	if (msg[0] !== 'events') return null;
	const d = msg[1]?.data;
	if (d?.type === 'response:completion' && typeof d.data?.delta === 'string') return d.data.delta;
	const c = d?.type === 'chat:completion' ? d.data?.choices?.[0]?.delta?.content : undefined;
	return typeof c === 'string' ? c : null;
}

/** Send `prompt` in the open chat; the answer must grow in the DOM and arrive as
 *  socket.io frames on a websocket. Returns what was seen. */
let answers = 0; // answers in the open chat so far: the next one's index
async function streamedAnswer(prompt) {
	const nth = answers++;
	const sentIso = dockerNow();
	await page.evaluate((nth) => {
		window.__e2eStates = [];
		const snap = () => {
			const els = document.querySelectorAll('#response-content-container');
			const t = els.length > nth ? els[nth].innerText : '';
			const s = window.__e2eStates;
			if (t && t !== (s.length ? s[s.length - 1].text : '')) s.push({ t: performance.now(), text: t });
		};
		if (window.__e2eObserver) window.__e2eObserver.disconnect();
		window.__e2eObserver = new MutationObserver(snap);
		window.__e2eObserver.observe(document.body, { subtree: true, childList: true, characterData: true });
	}, nth);
	const sent = Date.now();
	const input = page.locator('#chat-input');
	await input.click();
	await page.keyboard.type(prompt);
	await page.keyboard.press('Enter');
	await page.waitForFunction(
		(expect) => {
			const s = window.__e2eStates;
			return s.length && s[s.length - 1].text.replace(/\s+/g, ' ').includes(expect);
		},
		EXPECT,
		{ timeout: 90_000 },
	);
	const states = await page.evaluate(() => window.__e2eStates);
	const distinct = [...new Set(states.map((s) => norm(s.text)).filter((t) => t && EXPECT.startsWith(t)))];
	const partial = distinct.filter((t) => t.length < norm(EXPECT).length);
	// The stand-in streams 5 tokens 300 ms apart; Open WebUI sends them to the page as
	// socket.io events on the websocket: `42["events",{..."data":{"type":
	// "response:completion","data":{"delta":"Hello "}}}]` (or, older, chat:completion
	// with choices[].delta.content). Those deltas must add up to the answer.
	const frames = sockets.flatMap((s) =>
		s.frames
			.filter((f) => f.t >= sent)
			.map((f) => ({ ws: s.url, t: f.t, delta: answerDelta(f.text) }))
			.filter((f) => f.delta !== null),
	);
	fs.writeFileSync(path.join(ARTIFACTS, `scale-answer-${nth}.json`), JSON.stringify({ states, frames }, null, 1));
	if (distinct.length < MIN_STATES || partial.length < MIN_STATES - 1)
		throw new Error(`the answer did not grow in the page (want ${MIN_STATES} states): ${JSON.stringify(states.map((s) => s.text))}`);
	const carried = norm(frames.map((f) => f.delta).join(''));
	if (frames.length < MIN_STATES || carried !== norm(EXPECT))
		throw new Error(
			`the answer did not arrive as socket.io events on a websocket: ${frames.length} delta frames carrying ${JSON.stringify(carried)} (want >= ${MIN_STATES} adding up to ${JSON.stringify(EXPECT)})`,
		);
	return { nth, sentIso, distinct, frames, span: Math.round(states[states.length - 1].t - states[0].t) };
}

// ------------------------------------------------------------------ the phases
async function login() {
	begin('log in through the proxy as the admin webui created');
	const resp = await page.goto(URL_, { waitUntil: 'domcontentloaded' });
	if (!resp || !resp.ok()) throw new Error(`GET ${URL_}: ${resp && resp.status()}`);
	await page.waitForURL(/\/auth/, { timeout: 60_000 });
	const email = page.locator('input[type="email"], input[autocomplete="email"]').first();
	await email.waitFor({ timeout: 60_000 });
	if (await page.locator('input[autocomplete="name"], input[name="name"]').first().isVisible().catch(() => false))
		throw new Error('Open WebUI offers the first-user signup: webui up --admin-email did not create the admin');
	await email.fill(ADMIN.email);
	await page.locator('input[type="password"]').first().fill(ADMIN.password);
	await Promise.all([
		page.waitForURL((u) => !u.pathname.startsWith('/auth'), { timeout: 60_000, waitUntil: 'commit' }),
		page.locator('button[type="submit"]').first().click(),
	]);
	const t = await token();
	if (!t) throw new Error('no session token after the login');
	loggedIn = true;
	await page.waitForTimeout(1000);
	await dismissPopups();
	done(`logged in as ${ADMIN.email}`);
	return t;
}

async function spread(tok) {
	begin(`stream an answer while a second client sends GETs: spread over ${REPLICAS} replicas`);
	const since = dockerNow();
	const names = replicas();
	if (names.length !== REPLICAS) throw new Error(`want ${REPLICAS} open-webui replicas of ${PROJECT}, found: ${names.join(', ')}`);
	const h = hammer('spread', tok);
	await page.goto(`${URL_}/?models=${encodeURIComponent(MODEL)}`, { waitUntil: 'domcontentloaded' });
	await page.locator('#chat-input').waitFor({ timeout: 60_000 });
	await dismissPopups();
	let answer = await streamedAnswer('Say hello, scale.');
	await page.waitForURL(/\/c\//, { timeout: 30_000 });
	// Live events across replicas: the replica that answers the chat's POST streams
	// the tokens as socket.io events to the page's websocket, which another replica
	// may hold (Redis websocket manager). Until the two differ, another message (the
	// balancer decides where a POST goes: each try has about a 2 in 3 chance).
	const holder = await websocketReplica(names);
	let poster = postReplica(names, answer.sentIso);
	const tries = [poster];
	while (poster === holder.name && tries.length < 6) {
		answer = await streamedAnswer(`Say hello, scale (${tries.length + 1}).`);
		poster = postReplica(names, answer.sentIso);
		tries.push(poster);
	}
	if (poster === holder.name)
		throw new Error(`in ${tries.length} messages the chat's POST always went to ${holder.name}, the replica holding the websocket: events across replicas not shown`);
	// Keep the API client going a few seconds more, then stop.
	await sleep(3000);
	const results = await h.stop();
	const s = summary(results);
	if (s.failed.length)
		throw new Error(`${s.failed.length} of ${s.total} GETs failed: ${s.failed.slice(0, 5).map((r) => `${r.path} -> ${r.status} ${r.err ?? ''}`).join('; ')}`);
	// Where each tagged request was answered, from the replicas' own access logs.
	await sleep(1000);
	const where = new Map();
	const perReplica = {};
	const completions = {};
	const unauthorized = [];
	for (const n of names) {
		const l = parseLog(replicaLog(n, since));
		perReplica[n] = 0;
		completions[n] = l.statuses.filter((x) => x.method === 'POST' && x.path.startsWith('/api/chat/completions')).length;
		for (const [id, st] of l.tagged) {
			if (!id.startsWith(`${RUN}-spread-`)) continue;
			if (where.has(id)) throw new Error(`request ${id} was answered by two replicas: ${where.get(id)} and ${n}`);
			if (st !== 200) throw new Error(`${n} logged ${st} for ${id}, the client saw 200`);
			where.set(id, n);
			perReplica[n]++;
		}
		for (const x of l.statuses) if (x.status === 401) unauthorized.push(`${n}: ${x.method} ${x.path}`);
	}
	const missing = results.filter((r) => !where.has(r.id));
	if (missing.length)
		throw new Error(`${missing.length} of ${results.length} answered GETs are in no replica's access log (e.g. ${missing[0].id})`);
	const minShare = Math.max(1, Math.floor(results.length * 0.05));
	const few = names.filter((n) => perReplica[n] < minShare);
	if (few.length)
		throw new Error(`requests did not spread over every replica (each needs >= ${minShare}): ${JSON.stringify(perReplica)}`);
	if (unauthorized.length) throw new Error(`replicas answered 401 (the session was not valid everywhere): ${unauthorized.slice(0, 5).join('; ')}`);
	if (authVisits.length) throw new Error(`the browser was sent to the login page: ${authVisits.join(', ')}`);
	const open = openSockets();
	done(
		`${s.total} GETs, 0 failed (p50 ${s.p50} ms, p99 ${s.p99} ms), per replica ${JSON.stringify(perReplica)}, no 401 anywhere; ` +
			`answer: ${answer.distinct.length} growing DOM states over ${answer.span} ms, ${answer.frames.length} socket.io frames; ` +
			`the websocket on ${holder.name}, the chat's POST answered by ${poster} (message ${tries.length}): its tokens reached the page through Redis; ` +
			`POST /api/chat/completions per replica ${JSON.stringify(completions)}; ${open.length} open websocket(s)`,
	);
	return { names };
}

/** The replica whose access log shows the chat's POST /api/chat/completions since
 *  `since` (exactly one must). */
function postReplica(names, since) {
	const got = names.filter((n) =>
		parseLog(replicaLog(n, since)).statuses.some((x) => x.method === 'POST' && x.path.startsWith('/api/chat/completions')),
	);
	if (got.length !== 1) throw new Error(`want the chat's POST /api/chat/completions in one replica's log, found it in: ${got.join(', ') || 'none'}`);
	return got[0];
}

/** Bytes received so far by each established TCP connection in a container's network
 *  namespace (`ss -ti`: tcpi_bytes_received), by connection. */
function receivedBytes(name) {
	const c = inspect(name);
	if (!c || !c.State.Running) return new Map();
	const out = execFileSync('nsenter', ['-t', String(c.State.Pid), '-n', 'ss', '-Htni', 'state', 'established'], {
		encoding: 'utf8',
	});
	const m = new Map();
	let conn = null;
	for (const line of out.split('\n')) {
		if (/^\S/.test(line)) {
			const f = line.trim().split(/\s+/);
			conn = `${f[2]} ${f[3]}`;
		} else if (conn) {
			const b = /bytes_received:(\d+)/.exec(line);
			m.set(conn, b ? Number(b[1]) : 0);
			conn = null;
		}
	}
	return m;
}

/** The replica holding the page's socket.io websocket. Open WebUI does not log
 *  websocket handshakes and the proxy's cookie is opaque, so the page sends one
 *  socket.io message of PROBE random bytes (base64) (an event no handler takes) on its open websocket and
 *  the replica with a connection that received about that much in the meantime is
 *  the one (nothing else is sent meanwhile). */
const PROBE = 4 << 20;
async function websocketReplica(names) {
	const before = Object.fromEntries(names.map((n) => [n, receivedBytes(n)]));
	const sent = await page.evaluate((size) => {
		const ws = (window.__e2eWs ?? []).filter((w) => w.url.includes('/ws/socket.io') && w.readyState === 1);
		if (ws.length !== 1) return `the page has ${ws.length} open socket.io websockets`;
		// Random text: the websocket may be compressed (permessage-deflate).
		const bytes = new Uint8Array(size);
		for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
		let b64 = '';
		for (let i = 0; i < size; i += 32768) b64 += btoa(String.fromCharCode(...bytes.subarray(i, i + 32768)));
		ws[0].send(`42["e2e-probe","${b64}"]`);
		return null;
	}, PROBE);
	if (sent) throw new Error(`cannot probe the websocket: ${sent}`);
	await sleep(2000);
	const holders = [];
	const seen = [];
	for (const n of names) {
		const after = receivedBytes(n);
		for (const [conn, bytes] of after) {
			const d = bytes - (before[n].get(conn) ?? 0);
			seen.push(`${n} ${conn} +${d}`);
			if (d >= PROBE) holders.push({ name: n, conn, bytes: d });
		}
	}
	if (holders.length !== 1)
		throw new Error(
			`want one replica connection that received the ${PROBE}-byte websocket probe, found ${holders.length} (connections: ${seen.join(', ')})`,
		);
	return holders[0];
}

let victim = null;
async function kill(tok, names) {
	begin('kill the replica holding the websocket during a steady API client');
	const open = openSockets();
	if (open.length !== 1) throw new Error(`want one open socket.io websocket before the kill, the page has ${open.length}`);
	const holder = await websocketReplica(names);
	victim = holder.name;
	log(`the page's websocket is on ${victim} (its connection ${holder.conn} received the ${holder.bytes}-byte probe)`);
	const oldSocket = open[0];
	const before = inspect(victim);
	const h = hammer('kill', tok);
	await sleep(3000);
	const killedAt = Date.now();
	const killSince = dockerNow();
	docker('kill', victim);
	log(`docker kill ${victim} (${before.Id.slice(0, 12)}, started ${before.State.StartedAt}) with the API client running`);

	// The page's own socket.io client notices and opens a new websocket, no reload.
	const deadline = Date.now() + 90_000;
	while (!sockets.some((s) => s.opened > killedAt && s.closed === null)) {
		if (Date.now() > deadline) throw new Error(`the page opened no new websocket within 90 s of the kill (sockets: ${JSON.stringify(sockets.map((s) => ({ opened: s.opened - killedAt, closed: s.closed && s.closed - killedAt })))})`);
		await sleep(200);
	}
	const reopened = sockets.find((s) => s.opened > killedAt && s.closed === null);
	// The killed replica held it: the page's websocket closed.
	if (oldSocket.closed === null) throw new Error(`the page's websocket on ${victim} is still open after the kill`);
	const reconnectMs = reopened.opened - killedAt;
	const m = await me();
	if (m.status !== 200) throw new Error(`after the kill, GET /api/v1/auths/ with the page's token: ${m.status} ${m.body.slice(0, 200)}`);
	if (new URL(page.url()).pathname.startsWith('/auth') || authVisits.length)
		throw new Error(`the browser was sent to the login page after the kill: ${page.url()}`);
	done(`${victim} killed; the page's socket.io reconnected after ${reconnectMs} ms (no reload), still logged in as ${JSON.parse(m.body).email}`);

	begin('a new message in the same chat still streams (over the new websocket)');
	// Let the page settle first, as a person would: on a reconnect Open WebUI's page
	// joins again (`user-join`, acknowledged with a `43…` frame) and reloads the chat
	// (`chat:list`/`chat:active` events). A message typed within that half second was
	// once dropped from the page's view (its answer's events all arrived on the new
	// websocket, the page never showed them); that is the page's race, not the proxy's.
	const ackBy = Date.now() + 30_000;
	while (!reopened.frames.some((f) => f.text.startsWith('43')) && Date.now() < ackBy) await sleep(100);
	await sleep(2000);
	const answer = await streamedAnswer('Say hello again, scale.');
	const onNew = answer.frames.filter((f) => f.t >= reopened.opened).length;
	done(`${answer.distinct.length} growing DOM states over ${answer.span} ms, ${answer.frames.length} socket.io frames (${onNew} on the websocket opened after the kill)`);

	begin(`the killed replica comes back (supervision) and gets requests again`);
	let back = null;
	let backAt = 0;
	const until = killedAt + RETURN_TIMEOUT_MS;
	while (Date.now() < until) {
		const c = inspect(victim);
		const restarted = c && c.State.Running && (c.Id !== before.Id || c.State.StartedAt !== before.State.StartedAt);
		const healthy = restarted && (!c.State.Health || c.State.Health.Status === 'healthy');
		if (healthy) {
			if (!back) {
				back = c;
				backAt = Date.now();
				log(`${victim} running again after ${Math.round((backAt - killedAt) / 1000)} s (${c.Id === before.Id ? 'restarted' : `recreated as ${c.Id.slice(0, 12)}`}), health ${c.State.Health ? c.State.Health.Status : 'n/a'}`);
			}
			// Back in rotation: API requests sent after it came back are in its log.
			const l = parseLog(replicaLog(victim, killSince));
			const after = h.results.filter((r) => r.at >= backAt && l.tagged.get(r.id) === 200).length;
			if (after >= 5) break;
		}
		await sleep(1000);
	}
	if (!back) throw new Error(`${victim} was not running and healthy again within ${RETURN_TIMEOUT_MS / 1000} s of the kill`);
	const results = await h.stop();
	const l = parseLog(replicaLog(victim, killSince));
	const served = results.filter((r) => r.at >= backAt && l.tagged.get(r.id) === 200).length;
	if (served < 5) throw new Error(`${victim} came back but got only ${served} of the API client's requests within ${RETURN_TIMEOUT_MS / 1000} s`);
	const s = summary(results);
	if (s.failed.length)
		throw new Error(`${s.failed.length} of ${s.total} GETs failed across the kill: ${s.failed.slice(0, 5).map((r) => `${r.path} -> ${r.status} ${r.err ?? ''} at +${r.at - killedAt} ms`).join('; ')}`);
	if (authVisits.length) throw new Error(`the browser was sent to the login page: ${authVisits.join(', ')}`);
	done(
		`back after ${Math.round((backAt - killedAt) / 1000)} s, then answered ${served} GETs; across the kill ${s.total} GETs, 0 failed ` +
			`(p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms)`,
	);
}

let failed = null;
try {
	const tok = await login();
	const { names } = await spread(tok);
	await kill(tok, names);
} catch (e) {
	failed = e;
	await page.screenshot({ path: path.join(ARTIFACTS, 'scale-failure.png'), fullPage: true }).catch(() => {});
	fs.writeFileSync(path.join(ARTIFACTS, 'scale-page.html'), await page.content().catch(() => ''));
	console.error(`  scale: FAILED at "${stepName}": ${e.message}\n  scale: url ${page.url()}`);
	if (stepName) steps.push({ name: stepName, ms: Date.now() - stepT, detail: `FAILED: ${e.message}` });
}
fs.writeFileSync(path.join(ARTIFACTS, 'scale-console.log'), consoleLog.join('\n'));
fs.writeFileSync(
	path.join(ARTIFACTS, 'scale-sockets.json'),
	JSON.stringify(sockets.map((s) => ({ ...s, frames: s.frames.slice(0, 50) })), null, 1),
);
fs.writeFileSync(outFile, JSON.stringify({ steps, victim, total_ms: Date.now() - t0 }, null, 1));
await context.close();
agent.destroy();
process.exit(failed ? 1 : 0);
