// The browser half of the e2e suite (run by tests/e2e/run.sh): Debian's chromium,
// headless, driven by playwright-core, against webui's HTTPS proxy in front of the
// real Open WebUI.
//
//   node browser.mjs first|second OUT.json
//
// first:  get the admin's session: log in with the admin `webui up --admin-email`
//         made (E2E_ADMIN_MODE=login), or sign up as the first user, who becomes
//         the admin (E2E_ADMIN_MODE=signup); pick the fake model, send a message and
//         record the answer's text at every DOM change (it must grow in several
//         steps), upload a 20 MB document (no 413).
// second: (after the container was recreated) open the chat again with the same
//         profile: still logged in, the earlier chat and answer still there.
//
// Environment (set by run.sh): E2E_URL, E2E_DOMAIN, E2E_HOME (a $HOME whose
// ~/.pki/nssdb trusts pebble's root), E2E_PROFILE (user data dir, kept between the
// phases), E2E_ARTIFACTS, E2E_WORK, E2E_MODEL, E2E_EXPECT, E2E_ADMIN_MODE,
// E2E_PROXY_SOCKET (the proxy, when this runs in a network namespace of its own),
// E2E_ADMIN_EMAIL, E2E_ADMIN_PASSWORD, E2E_MIN_STATES (default 3).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { forward } from './forward.mjs';

const [phase, outFile] = process.argv.slice(2);
const env = (k) => {
	const v = process.env[k];
	if (!v) throw new Error(`${k} is not set (run tests/e2e/run.sh)`);
	return v;
};
const URL_ = env('E2E_URL');
const ARTIFACTS = env('E2E_ARTIFACTS');
const WORK = env('E2E_WORK');
const MODEL = env('E2E_MODEL');
const EXPECT = env('E2E_EXPECT');
const STATE_FILE = path.join(WORK, 'browser-state.json');
const ADMIN = { name: 'E2E Admin', email: env('E2E_ADMIN_EMAIL'), password: env('E2E_ADMIN_PASSWORD') };
const ADMIN_MODE = env('E2E_ADMIN_MODE'); // login | signup
const PROMPT = 'Say hello, e2e.';

const steps = [];
const t0 = Date.now();
let stepName = null;
let stepT = 0;
function begin(name) {
	stepName = name;
	stepT = Date.now();
	console.log(`  browser: ${name} ...`);
}
function done(detail) {
	steps.push({ name: stepName, ms: Date.now() - stepT, detail: detail ?? null });
	stepName = null;
}
function save() {
	fs.writeFileSync(outFile, JSON.stringify({ phase, steps, total_ms: Date.now() - t0 }, null, 1));
}
const norm = (s) => (s ?? '').replace(/\s+/g, ' ').trim();

fs.mkdirSync(ARTIFACTS, { recursive: true });
// run.sh starts this process in a network namespace of its own (only a loopback):
// the proxy's port is forwarded in through a Unix socket (forward.mjs).
if (process.env.E2E_PROXY_SOCKET) {
	const port = new URL(URL_).port;
	await forward(`tcp:127.0.0.1:${port}`, `unix:${process.env.E2E_PROXY_SOCKET}`);
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
	// Certificate errors are NOT ignored: pebble's root is trusted via the NSS db.
	ignoreHTTPSErrors: false,
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(30_000);
const consoleLog = [];
page.on('console', (m) => consoleLog.push(`[${m.type()}] ${m.text()}`));
page.on('pageerror', (e) => consoleLog.push(`[pageerror] ${e.message}`));
const wsUrls = [];
page.on('websocket', (ws) => wsUrls.push(ws.url()));

async function dismissPopups() {
	// "What's new" / onboarding modals of a fresh install.
	for (const name of [/okay, let's go/i, /^ok/i, /^close$/i, /^dismiss$/i]) {
		const b = page.getByRole('button', { name }).first();
		// A short timeout: a covered or vanishing button must not hold the run for 30 s.
		if (await b.isVisible().catch(() => false)) await b.click({ timeout: 2000 }).catch(() => {});
	}
	await page.keyboard.press('Escape').catch(() => {});
}

async function token() {
	return page.evaluate(() => localStorage.getItem('token'));
}

async function api(p, opts = {}) {
	return page.evaluate(
		async ([p, opts]) => {
			const r = await fetch(p, {
				...opts,
				headers: { Authorization: `Bearer ${localStorage.getItem('token')}`, ...(opts.headers ?? {}) },
			});
			return { status: r.status, body: await r.text() };
		},
		[p, opts],
	);
}

// Which form the auth page shows: 'signup' (the first-user onboarding, or a form
// with a name field) or 'login'. Waits for the page to settle on one.
async function authForm() {
	const email = page.locator('input[type="email"], input[autocomplete="email"]').first();
	const name = page.locator('input[autocomplete="name"], input[name="name"]').first();
	const getStarted = page.getByRole('button', { name: /get started/i }).first();
	for (let i = 0; i < 120; i++) {
		if (await getStarted.isVisible().catch(() => false)) {
			await getStarted.click({ timeout: 2000 }).catch(() => {});
			await page.waitForTimeout(500);
			continue;
		}
		if (await name.isVisible().catch(() => false)) return 'signup';
		if (await email.isVisible().catch(() => false)) {
			// The name field of a signup form renders with the email field; give it a moment.
			await page.waitForTimeout(500);
			return (await name.isVisible().catch(() => false)) ? 'signup' : 'login';
		}
		await page.waitForTimeout(500);
	}
	throw new Error('the auth page showed neither a signup nor a login form within 60 s');
}

async function submitAuth(form) {
	if (form === 'signup') await page.locator('input[autocomplete="name"], input[name="name"]').first().fill(ADMIN.name);
	await page.locator('input[type="email"], input[autocomplete="email"]').first().fill(ADMIN.email);
	const pw = page.locator('input[type="password"]');
	for (let i = 0; i < (await pw.count()); i++) await pw.nth(i).fill(ADMIN.password);
	await Promise.all([
		page.waitForURL((u) => !u.pathname.startsWith('/auth'), { timeout: 60_000, waitUntil: 'commit' }),
		page.locator('button[type="submit"]').first().click(),
	]).catch(async (e) => {
		const msg = await page.locator('[data-sonner-toast], .toast, [role="alert"]').allInnerTexts().catch(() => []);
		throw new Error(`${form} as ${ADMIN.email} did not leave /auth: ${msg.join(' | ') || e.message}`);
	});
}

async function first() {
	begin('open the site over HTTPS (pebble certificate trusted via NSS)');
	const resp = await page.goto(URL_, { waitUntil: 'domcontentloaded' });
	if (!resp || !resp.ok()) throw new Error(`GET ${URL_}: ${resp && resp.status()}`);
	await page.waitForURL(/\/auth/, { timeout: 60_000 });
	done(page.url());

	begin(ADMIN_MODE === 'login' ? 'log in as the admin webui created' : 'create the admin account (first signup)');
	const form = await authForm();
	if (form !== ADMIN_MODE) {
		if (ADMIN_MODE === 'login')
			throw new Error(
				'webui up --admin-email was given, but Open WebUI offers the first-user signup: the admin was not created before the site opened',
			);
		// Signup expected but the login form shows: an admin exists already (e.g. made
		// by a webui that creates one without listing --admin-email). Ours, if the
		// credentials work.
		console.log('  browser: note: the login form shows where the first-user signup was expected; logging in');
	}
	await submitAuth(form);
	if (!(await token())) throw new Error(`no session token after ${form}`);
	await page.waitForTimeout(1000);
	await dismissPopups();
	done(`${form === 'login' ? 'logged in' : 'signed up'} as ${ADMIN.email}`);

	begin(`pick the fake model (${MODEL})`);
	await page.goto(`${URL_}/?models=${encodeURIComponent(MODEL)}`, { waitUntil: 'domcontentloaded' });
	await page.locator('#chat-input').waitFor({ timeout: 60_000 });
	await dismissPopups();
	await page.getByText(MODEL.split(':')[0], { exact: false }).first().waitFor({ timeout: 30_000 });
	done();

	begin('send a message, watch the answer grow (websocket through the proxy)');
	await page.evaluate(() => {
		window.__e2eStates = [];
		const snap = () => {
			const els = document.querySelectorAll('#response-content-container');
			const t = els.length ? els[els.length - 1].innerText : '';
			const s = window.__e2eStates;
			if (t && t !== (s.length ? s[s.length - 1].text : '')) s.push({ t: performance.now(), text: t });
		};
		new MutationObserver(snap).observe(document.body, { subtree: true, childList: true, characterData: true });
	});
	const input = page.locator('#chat-input');
	await input.click();
	await page.keyboard.type(PROMPT);
	await page.keyboard.press('Enter');
	await page.waitForFunction(
		(expect) => {
			const s = window.__e2eStates;
			return s.length && s[s.length - 1].text.replace(/\s+/g, ' ').includes(expect);
		},
		EXPECT,
		{ timeout: 60_000 },
	);
	const states = await page.evaluate(() => window.__e2eStates);
	const growing = states.map((s) => norm(s.text)).filter((t) => t.length > 0 && EXPECT.startsWith(t.slice(0, Math.min(t.length, EXPECT.length))));
	const distinct = [...new Set(growing)];
	fs.writeFileSync(path.join(ARTIFACTS, 'answer-states.json'), JSON.stringify(states, null, 1));
	// The stand-in (image webui-test/ollama:slow) streams 5 tokens 300 ms apart: each is
	// its own DOM state. At least E2E_MIN_STATES (default 3) distinct texts, each a
	// prefix of the answer, partial ones before the whole.
	const minStates = Number(process.env.E2E_MIN_STATES || 3);
	const partial = distinct.filter((t) => t.length < norm(EXPECT).length);
	if (distinct.length < minStates || partial.length < minStates - 1)
		throw new Error(`the answer did not grow in the page (want ${minStates} states): ${JSON.stringify(states.map((s) => s.text))}`);
	const span = Math.round(states[states.length - 1].t - states[0].t);
	const ws = wsUrls.filter((u) => u.includes('/ws/socket.io'));
	if (!ws.length) throw new Error(`no websocket to /ws/socket.io was opened (saw: ${wsUrls.join(', ')})`);
	done(`${distinct.length} growing DOM states over ${span} ms: ${distinct.map((s) => JSON.stringify(s)).join(' -> ')}; websocket ${ws[0]}`);
	await page.waitForURL(/\/c\//, { timeout: 30_000 });
	const chatPath = new URL(page.url()).pathname;

	begin('upload a 20 MB document in the chat');
	const doc = path.join(WORK, 'e2e-20mb.txt');
	const line = 'webui e2e upload: streamed through the proxy without a body limit.\n';
	fs.writeFileSync(doc, line.repeat(Math.ceil((20 << 20) / line.length)).slice(0, 20 << 20));
	const upload = page.waitForResponse(
		(r) => r.request().method() === 'POST' && /\/api\/v1\/files\/?(\?|$)/.test(new URL(r.url()).pathname + new URL(r.url()).search),
		{ timeout: 180_000 },
	);
	await page.locator('input[type="file"]').first().setInputFiles(doc);
	const r = await upload;
	const body = await r.text().catch(() => '');
	if (r.status() === 413) throw new Error(`413 on the 20 MB upload: ${body}`);
	if (!r.ok()) throw new Error(`upload answered ${r.status()}: ${body.slice(0, 300)}`);
	let fileId = null;
	try { fileId = JSON.parse(body).id; } catch {}
	if (!fileId) throw new Error(`upload answer without a file id: ${body.slice(0, 300)}`);
	// Every byte arrived: Open WebUI serves the stored file back with its size.
	const size = fs.statSync(doc).size;
	const stored = await page.evaluate(async (id) => {
		const r = await fetch(`/api/v1/files/${id}/content`, {
			headers: { Authorization: `Bearer ${localStorage.getItem('token')}` },
		});
		return { status: r.status, bytes: (await r.arrayBuffer()).byteLength };
	}, fileId);
	if (stored.status !== 200 || stored.bytes !== size)
		throw new Error(`stored file: HTTP ${stored.status}, ${stored.bytes} bytes, sent ${size}`);
	done(`POST ${new URL(r.url()).pathname} -> ${r.status()}, ${(size / 1048576).toFixed(0)} MB; read back ${stored.bytes} bytes (file ${fileId})`);
	fs.writeFileSync(STATE_FILE, JSON.stringify({ chatPath, fileId }));
}

async function second() {
	const { chatPath } = JSON.parse(fs.readFileSync(STATE_FILE, 'utf8'));
	begin('reload the chat after the container was recreated');
	await page.goto(`${URL_}${chatPath}`, { waitUntil: 'domcontentloaded' });
	await page.waitForTimeout(2000);
	if (new URL(page.url()).pathname.startsWith('/auth')) throw new Error('sent to /auth: the session did not survive');
	const me = await api('/api/v1/auths/');
	if (me.status !== 200) throw new Error(`GET /api/v1/auths/ with the stored token: ${me.status} ${me.body}`);
	done(`still logged in as ${JSON.parse(me.body).email}`);

	begin('the earlier chat and answer are there');
	await page.getByText(PROMPT).first().waitFor({ timeout: 60_000 });
	await page.locator('#response-content-container', { hasText: EXPECT }).first().waitFor({ timeout: 30_000 });
	done(`${chatPath}: the prompt and the answer "${EXPECT}"`);
}

let failed = null;
try {
	if (phase === 'first') await first();
	else if (phase === 'second') await second();
	else throw new Error(`unknown phase ${phase}`);
} catch (e) {
	failed = e;
	const shot = path.join(ARTIFACTS, `failure-${phase}.png`);
	await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
	fs.writeFileSync(path.join(ARTIFACTS, `page-${phase}.html`), await page.content().catch(() => ''));
	console.error(`  browser: FAILED at "${stepName}": ${e.message}\n  browser: screenshot ${shot}, url ${page.url()}`);
	if (stepName) steps.push({ name: stepName, ms: Date.now() - stepT, detail: `FAILED: ${e.message}` });
}
fs.writeFileSync(path.join(ARTIFACTS, `console-${phase}.log`), consoleLog.join('\n'));
save();
await context.close();
process.exit(failed ? 1 : 0);
