// A byte-for-byte stream forwarder, so that the browser can run in a network
// namespace of its own (only a loopback) and still reach webui's proxy: inside,
// browser.mjs listens on 127.0.0.1:<the proxy's port> and forwards to a Unix socket;
// outside, run.sh runs this file to forward that socket to the proxy's real port.
// The browser then sees none of the host's network changes (tests add and remove
// Docker networks all the time; Chromium aborts its requests with
// ERR_NETWORK_CHANGED on each), and can reach nothing but the proxy.
//
//   node forward.mjs unix:/path/to.sock tcp:127.0.0.1:PORT
import net from 'node:net';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

function parse(spec) {
	if (spec.startsWith('unix:')) return { path: spec.slice(5) };
	const m = /^tcp:(.+):(\d+)$/.exec(spec);
	if (!m) throw new Error(`not unix:PATH or tcp:HOST:PORT: ${spec}`);
	return { host: m[1], port: Number(m[2]) };
}

/** Listen on `from` and pipe every connection to `to`; resolves once listening. */
export function forward(from, to) {
	const listen = parse(from);
	const target = parse(to);
	if (listen.path) fs.rmSync(listen.path, { force: true });
	const server = net.createServer((client) => {
		const upstream = net.connect(target);
		client.pipe(upstream);
		upstream.pipe(client);
		const close = () => {
			client.destroy();
			upstream.destroy();
		};
		client.on('error', close);
		upstream.on('error', close);
		client.on('close', close);
		upstream.on('close', close);
	});
	return new Promise((resolve, reject) => {
		server.once('error', reject);
		server.listen(listen.path ? { path: listen.path } : { host: listen.host, port: listen.port }, () =>
			resolve(server),
		);
	});
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
	const [from, to] = process.argv.slice(2);
	await forward(from, to);
	console.log(`forwarding ${from} -> ${to}`);
}
