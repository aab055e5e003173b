// The Phase 2 plan's JavaScript client, run by Node's own WebSocket (node
// --experimental-websocket, Node >= 20.10; global in Node 22). The snippet is the plan's,
// statement for statement; two things differ because they must: the port is the test
// server's, and `send` waits for `open`, since a WebSocket still connecting throws on send.
//
// Usage: node --experimental-websocket seed_client.mjs PORT
const port = process.argv[2];
const timer = setTimeout(() => { console.error('no answer within 20 s'); process.exit(2); }, 20000);

// --- the plan's snippet ---
const ws = new WebSocket('ws://localhost:' + port);
ws.addEventListener('open', () => {
ws.send(JSON.stringify({
    id: "123",
    type: "request",
    action: "list_services",
    params: {}
}));
});
// --- end of the snippet ---

ws.addEventListener('message', (message) => {
    const answer = JSON.parse(message.data);
    if (answer.id !== '123' || answer.type !== 'response' || answer.action !== 'list_services') {
        console.error('unexpected answer', message.data);
        process.exit(1);
    }
    const names = answer.params.services.map((s) => s.name);
    if (JSON.stringify(names) !== JSON.stringify(['db'])) {
        console.error('unexpected services', names);
        process.exit(1);
    }
    console.log('ok');
    ws.close(1000, 'done');
});
ws.addEventListener('close', (event) => {
    clearTimeout(timer);
    if (event.code !== 1000) {
        console.error('closed with', event.code, event.reason);
        process.exit(1);
    }
});
ws.addEventListener('error', (event) => {
    console.error('error', event.message ?? event);
    process.exit(1);
});
